"""What master and workers say to each other over Locust's own message channel, as plain data.

A distributed phase shares no path between machines: the master sends each
worker the run plan and its share of the phase (``PLAN``), each worker sends
back its result files (``RESULTS``: raw samples, kept answers), and both go
as zlib-compressed chunks small enough for one Locust message each. Every
message carries the phase id, so whatever arrives late from an earlier phase
is dropped (``Reassembly``). A worker introduces itself with its name and
package version (``HELLO``) and reports how many measured requests it holds
(``PROGRESS``), so that a worker lost mid-phase is named with what was lost.

Nothing here imports Locust or gevent: ``users`` wires these to the runners.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field

import msgpack

HELLO = "serving_hello"
REFUSED = "serving_refused"
PLAN = "serving_plan"
PROGRESS = "serving_progress"
RESULTS = "serving_results"
#: Below ZeroMQ's and msgpack's comfort, well above one request's body.
CHUNK_BYTES = 512 * 1024
#: A worker's exit code when the master refused it (another version) or it refused the target:
#: restarting it cannot help, so ``pytest-serving load-worker`` stops too.
EXIT_CODE_REFUSED = 4
#: The only files a worker may send back, named by its share of the phase.
RESULT_FILE = re.compile(r"(raw-(?P<raw>\d+)\.npz|answers-(?P<answers>\d+)\.json)")


class ChannelError(ValueError):
    """A message that does not belong to the protocol: malformed, out of order, or naming a file it may not."""


def chunk_messages(phase_id: str, files: Mapping[str, bytes], chunk_bytes: int = CHUNK_BYTES) -> list[dict]:
    """``files`` (name → content) as the data of consecutive messages: msgpack, zlib, cut into chunks."""
    packed = zlib.compress(msgpack.packb(dict(files), use_bin_type=True))
    pieces = [packed[start : start + chunk_bytes] for start in range(0, len(packed), chunk_bytes)] or [b""]
    return [{"phase": phase_id, "seq": seq, "total": len(pieces), "data": piece} for seq, piece in enumerate(pieces)]


@dataclass
class Reassembly:
    """Collects the chunks each sender sends for one phase; whole payloads come out of ``add``.

    Chunks of another phase are counted in ``discarded`` and otherwise ignored:
    a worker that was slow to deliver an earlier phase must not leak into this one.
    """

    phase_id: str
    discarded: int = 0
    _parts: dict[str, list[bytes]] = field(default_factory=dict)

    def add(self, sender: str, message: Mapping) -> dict[str, bytes] | None:
        """Take one chunk from ``sender``; return its files once the last chunk is in, else None."""
        if message.get("phase") != self.phase_id:
            self.discarded += 1
            return None
        try:
            seq, total, data = int(message["seq"]), int(message["total"]), bytes(message["data"])
        except (KeyError, TypeError, ValueError) as error:
            raise ChannelError(f"malformed chunk from {sender}: {error!r}") from None
        parts = self._parts.setdefault(sender, [])
        if seq != len(parts) or not 0 < total or seq >= total:
            raise ChannelError(f"chunk {seq} of {total} from {sender} arrived after {len(parts)} chunk(s)")
        parts.append(data)
        if len(parts) < total:
            return None
        del self._parts[sender]
        try:
            files = msgpack.unpackb(zlib.decompress(b"".join(parts)), raw=False)
        except (zlib.error, ValueError, msgpack.ExtraData) as error:
            raise ChannelError(f"undecodable payload from {sender}: {error!r}") from None
        if not isinstance(files, dict) or not all(
            isinstance(name, str) and isinstance(content, bytes) for name, content in files.items()
        ):
            raise ChannelError(f"payload from {sender} is not a mapping of file names to bytes")
        return files


def check_result_files(files: Mapping[str, bytes], share: int, sender: str) -> None:
    """Refuse result files a worker may not write: anything but ``raw-<share>.npz`` and ``answers-<share>.json``."""
    for name in files:
        match = RESULT_FILE.fullmatch(name)
        if match is None or int(match["raw"] or match["answers"]) != share:
            raise ChannelError(f"{sender} sent {name!r}; a worker with share {share} may send only raw-{share}.npz")
    if f"raw-{share}.npz" not in files:
        raise ChannelError(f"{sender} sent no raw-{share}.npz")


def version_mismatch(worker_name: str, worker_version: str, master_version: str) -> str | None:
    """The one error both sides print when a worker runs another pytest-serving than the master, else None."""
    if worker_version == master_version:
        return None
    return (
        f"worker {worker_name} runs pytest-serving {worker_version or '(unknown)'} but the master runs "
        f"{master_version}: install pytest-serving=={master_version} on the worker"
    )


@dataclass
class Progress:
    """A worker's last report: how many measured requests it held, and when (master's clock, seconds)."""

    recorded: int = 0
    at: float | None = None


def lost_worker_error(name: str, progress: Progress, now: float, how: str) -> str:
    """The phase's failure when ``name`` vanished before its samples arrived: who, how, and what was lost."""
    if progress.at is None:
        lost = "it had not reported any measured request yet"
    else:
        lost = (
            f"its {progress.recorded} measured request(s) recorded by its last report "
            f"({now - progress.at:.1f} s earlier) are lost, and whatever it sent after"
        )
    return f"Locust worker {name} {how} before its samples arrived: {lost}"
