"""The plugin's options through a real pytest run (pytester), no Docker needed."""


def test_options_come_from_command_line_env_and_ini_in_that_order(pytester, monkeypatch):
    pytester.makeini("[pytest]\nserving_samples_limit = 3\nserving_report = from-ini\n")
    monkeypatch.setenv("PYTEST_SERVING_REPORT", "from-env")
    pytester.makepyfile(
        """
        def test_settings(serving_settings):
            assert serving_settings.samples_limit == 3
            assert str(serving_settings.report_dir) == "from-cli"
            assert serving_settings.startup_timeout == 600
        """
    )
    pytester.runpytest("--serving-report=from-cli").assert_outcomes(passed=1)


def test_env_beats_ini(pytester, monkeypatch):
    pytester.makeini("[pytest]\nserving_report = from-ini\nserving_strict = false\n")
    monkeypatch.setenv("PYTEST_SERVING_REPORT", "from-env")
    monkeypatch.setenv("PYTEST_SERVING_STRICT", "1")
    pytester.makepyfile(
        """
        def test_settings(serving_settings):
            assert str(serving_settings.report_dir) == "from-env"
            assert serving_settings.strict
        """
    )
    pytester.runpytest().assert_outcomes(passed=1)


def test_without_serving_no_serving_suite_is_collected(pytester):
    pytester.makepyfile("def test_unit(): pass")
    result = pytester.runpytest("--collect-only", "-q")
    result.stdout.no_fnmatch_line("*suites/test_contract.py*")
    result.stdout.fnmatch_lines(["*test_unit*"])


def test_with_serving_the_contract_suite_is_collected_per_target_and_sample(pytester):
    pytester.makepyfile("def test_unit(): pass")
    result = pytester.runpytest("--serving=triton", "--collect-only", "-q", "--serving-samples-limit=2")
    result.stdout.fnmatch_lines(["*test_contract.py::test_sample[[]triton-chelsea[]]*"])
    result.stdout.fnmatch_lines(["*test_contract.py::test_accuracy_matches_reference[[]triton[]]*"])


def test_unknown_target_is_reported_as_usage_error(pytester):
    result = pytester.runpytest("--serving=nonesuch")
    assert result.ret == 4
    result.stderr.fnmatch_lines(["*unknown target*nonesuch*"])


def test_sweep_levels_are_user_counts_or_open_loop_rates(pytester):
    pytester.makepyfile(
        """
        def test_settings(serving_settings):
            load = serving_settings.load
            assert (load.sweep_arrival, load.sweep_levels) == ("poisson", (2.5, 5.0))
        """
    )
    pytester.runpytest("--serving-sweep-arrival=poisson", "--serving-sweep-levels=2.5,5").assert_outcomes(passed=1)


def test_fractional_user_counts_and_unknown_arrivals_are_usage_errors(pytester):
    pytester.makepyfile("def test_nothing(): pass")
    result = pytester.runpytest("--serving-sweep-levels=2.5")
    result.stderr.fnmatch_lines(["*--serving-sweep-levels: not a list of user counts*"])
    result = pytester.runpytest("--serving-sweep-arrival=burst")
    result.stderr.fnmatch_lines(["*--serving-sweep-arrival: expected one of users, poisson, constant*"])


def test_every_default_comes_from_its_option_entry(pytester):
    pytester.makepyfile(
        """
        from pytest_serving.settings import all_options

        def test_settings(serving_settings):
            defaults = {option.dest: option.default for option in all_options()}
            load = serving_settings.load
            assert load.max_regression_pct == float(defaults["serving_max_regression"])
            assert load.sweep_duration == float(defaults["serving_sweep_duration"])
            assert load.sweep_warmup == float(defaults["serving_sweep_warmup"])
            assert load.sweep_repeats == int(defaults["serving_sweep_repeats"])
            assert load.workers == int(defaults["serving_load_workers"])
            assert load.mode == defaults["serving_load"]
            assert serving_settings.startup_timeout == float(defaults["serving_startup_timeout"])
            assert serving_settings.model == defaults["serving_model"]
            assert serving_settings.target_extra == {"serving_torchserve_auth": defaults["serving_torchserve_auth"]}
        """
    )
    pytester.runpytest().assert_outcomes(passed=1)


def test_a_zero_regression_tolerance_is_taken_as_zero(pytester, monkeypatch):
    pytester.makepyfile(
        """
        def test_settings(serving_settings):
            assert serving_settings.load.max_regression_pct == 0.0
            assert serving_settings.load.sweep_warmup == 0.0
        """
    )
    pytester.runpytest("--serving-max-regression=0", "--serving-sweep-warmup=0").assert_outcomes(passed=1)
    pytester.makeini("[pytest]\nserving_max_regression = 0\n")
    pytester.runpytest("--serving-sweep-warmup=0").assert_outcomes(passed=1)
    pytester.makeini("[pytest]\n")
    monkeypatch.setenv("PYTEST_SERVING_MAX_REGRESSION", "0")
    pytester.runpytest("--serving-sweep-warmup=0").assert_outcomes(passed=1)


def test_a_zero_sweep_duration_is_a_usage_error_naming_the_option(pytester):
    pytester.makepyfile("def test_nothing(): pass")
    result = pytester.runpytest("--serving-sweep-duration=0")
    assert result.ret == 4
    result.stderr.fnmatch_lines(["*--serving-sweep-duration: expected a number > 0, got '0'*"])
    result = pytester.runpytest("--serving-max-regression=-1")
    assert result.ret == 4
    result.stderr.fnmatch_lines(["*--serving-max-regression: expected a number >= 0, got '-1'*"])


def test_a_target_declares_its_own_options_on_its_class(pytester):
    pytester.makepyfile(
        """
        def test_settings(serving_settings):
            assert serving_settings.target_extra == {"serving_torchserve_auth": "off"}
        """
    )
    pytester.runpytest("--serving-torchserve-auth=off").assert_outcomes(passed=1)
    help_text = pytester.runpytest("--help").stdout.str()
    assert "--serving-torchserve-auth" in help_text and "PYTEST_SERVING_TORCHSERVE_AUTH" in help_text


def test_the_release_test_is_collected_only_with_a_candidate(pytester):
    pytester.makepyfile("def test_unit(): pass")
    without = pytester.runpytest("--serving=triton", "--collect-only", "-q", "--serving-samples-limit=1")
    without.stdout.no_fnmatch_line("*test_release.py*")
    with_candidate = pytester.runpytest(
        "--serving=triton", "--collect-only", "-q", "--serving-samples-limit=1", "--serving-candidate=resnet50"
    )
    with_candidate.stdout.fnmatch_lines(["*test_release.py::test_release[[]triton[]]*"])


def test_release_limits_are_parsed_and_checked_before_anything_starts(pytester):
    pytester.makepyfile("def test_unit(): pass")
    for arguments, message in (
        (
            ["--serving-candidate=nonesuch"],
            "*--serving-candidate: 'nonesuch' is neither a card file nor a built-in model*",
        ),
        (["--serving-min-agreement=1.5"], "*--serving-min-agreement: expected a number >= 0 and <= 1*"),
        (["--serving-release-windows=3"], "*--serving-release-windows: expected a number >= 5*"),
        (["--serving-rollout=maybe"], "*--serving-rollout: expected on or off*"),
        (["--serving-rollout-max-p99-ratio=0.5"], "*--serving-rollout-max-p99-ratio: expected a number >= 1*"),
        (["--serving-rollout-max-p99-ms=0"], "*--serving-rollout-max-p99-ms: expected a number > 0, got 0*"),
        (["--serving-rollout-rate=fast"], "*--serving-rollout-rate: expected a float, got 'fast'*"),
    ):
        result = pytester.runpytest(*arguments)
        assert result.ret == 4, arguments
        result.stderr.fnmatch_lines([message])


def test_the_rollout_budgets_come_from_the_command_line_or_the_ini_file(pytester):
    pytester.makeini("[pytest]\nserving_rollout_max_p99_ratio = 1.5\n")
    pytester.makepyfile(
        """
        from pytest_serving.release.options import ReleaseSettings

        def test_budgets(pytestconfig, serving_settings):
            release = ReleaseSettings.from_config(pytestconfig, serving_settings)
            assert (release.rollout_max_p99_ratio, release.rollout_max_p99_ms) == (1.5, 800.0)
            assert release.rollout_rate is None
        """
    )
    pytester.runpytest("--serving-rollout-max-p99-ms=800").assert_outcomes(passed=1)
