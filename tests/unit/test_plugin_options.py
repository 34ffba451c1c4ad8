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
