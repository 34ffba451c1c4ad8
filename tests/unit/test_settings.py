import pytest

from pytest_serving.settings import (
    Settings,
    default_values,
    parse_assignments,
    parse_gpus,
    parse_probability_difference,
    parse_targets,
)

KNOWN = ["triton", "torchserve", "kserve"]


def test_all_selects_every_known_target():
    assert parse_targets("all", KNOWN) == KNOWN


def test_comma_list_keeps_order_and_drops_duplicates():
    assert parse_targets("kserve, triton,kserve", KNOWN) == ["kserve", "triton"]


def test_unknown_target_is_a_usage_error_naming_it():
    with pytest.raises(pytest.UsageError, match="bogus"):
        parse_targets("triton,bogus", KNOWN)


def test_no_value_selects_nothing():
    assert parse_targets(None, KNOWN) == []


def test_assignments_from_repeated_options_and_comma_lists():
    assert parse_assignments(["triton=img:1", "kserve=a,torchserve=b"], "--serving-image") == {
        "triton": "img:1",
        "kserve": "a",
        "torchserve": "b",
    }


def test_assignment_keeps_equals_signs_in_the_value():
    assert parse_assignments(["triton=http://h/?a=b"], "--serving-url") == {"triton": "http://h/?a=b"}


@pytest.mark.parametrize("bad", ["triton", "=img", "triton="])
def test_malformed_assignment_is_a_usage_error(bad):
    with pytest.raises(pytest.UsageError, match="NAME=VALUE"):
        parse_assignments([bad], "--serving-image")


@pytest.mark.parametrize(("value", "expected"), [(None, None), ("0", None), ("all", "all"), ("2", "2")])
def test_gpus(value, expected):
    assert parse_gpus(value) == expected


def test_bad_gpus_value_is_a_usage_error():
    with pytest.raises(pytest.UsageError):
        parse_gpus("many")


def test_options_a_new_target_class_declares_are_collected_without_editing_settings(monkeypatch):
    from pytest_serving import settings
    from pytest_serving.targets.torchserve import TorchServe
    from pytest_serving.types import Option

    demo = Option("serving-demo-flavour", "demo's flavour", default="plain")
    monkeypatch.setattr(TorchServe, "extra_options", (*TorchServe.extra_options, demo))
    assert demo in settings.all_options()
    assert "serving_demo_flavour" in settings.target_option_names()


def test_a_target_option_may_not_redefine_a_plugin_option(monkeypatch):
    from pytest_serving import settings
    from pytest_serving.targets.torchserve import TorchServe
    from pytest_serving.types import Option

    monkeypatch.setattr(TorchServe, "extra_options", (Option("serving-load", "clash", default="x"),))
    with pytest.raises(ValueError, match="TorchServe declares option --serving-load"):
        settings.all_options()


def test_probability_difference_defaults_to_the_option_table_value():
    assert parse_probability_difference(default_values()) == 0.001
    built_in_code = Settings([], None, None, None, None, {}, {}, None, None, 1.0, "m", None, False)
    assert built_in_code.max_probability_difference == 0.001


@pytest.mark.parametrize("bad", ["often", "-0.1", "2", "nan"])
def test_a_probability_difference_outside_0_to_1_is_a_usage_error_naming_the_option(bad):
    with pytest.raises(pytest.UsageError, match="--serving-max-probability-difference"):
        parse_probability_difference({"serving_max_probability_difference": bad})
