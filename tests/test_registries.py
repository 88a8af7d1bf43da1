"""Every list of names is read from its registry (methods and teacher kinds: registry.py; task
families: questions.FAMILIES), and the CLI flags that set config keys are built from the keys'
fields: one declaration each, so the config, the CLI and the help cannot disagree."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest
from click.testing import CliRunner
from helpers import invoke

from qcrd_plugin import cli
from qcrd_plugin.config import RunConfig, config_field, describe_fields, field_choices, load_config
from qcrd_plugin.errors import ConfigError, UserInputError
from qcrd_plugin.questions import FAMILIES, family_names, real_families, source_names
from qcrd_plugin.registry import METHODS, TEACHERS, Registry, UnknownName


def choices_of(key: str) -> tuple:
    return field_choices(config_field(key)[1])


def help_of(*args: str) -> str:
    result = CliRunner().invoke(cli.main, [*args, "--help"], terminal_width=400)
    assert result.exit_code == 0, result.output
    return result.output


def test_config_choices_are_the_registries():
    assert choices_of("method.name") == METHODS.names() == ("finetune", "single_task", "dss", "mi", "qcrd")
    assert choices_of("task.name") == family_names() == (*FAMILIES, "custom")
    assert choices_of("teacher.kind") == ("auto", *TEACHERS)
    assert TEACHERS.names(llm=True) == ("hf", "openai")
    assert "synth" not in real_families() and set(real_families()) | {"synth"} == set(FAMILIES)
    assert {s for f in real_families() for s in FAMILIES[f].sources} == set(source_names())


def test_every_registered_name_resolves_to_its_implementation():
    from qcrd_plugin import teachers
    from qcrd_plugin.methods import METHODS as reexported
    from qcrd_plugin.methods.base import Method

    assert reexported is METHODS
    for name in METHODS:
        assert issubclass(METHODS[name], Method) and METHODS[name].name == name  # the class's label agrees
    for kind in TEACHERS:
        assert callable(TEACHERS[kind]) and getattr(teachers, TEACHERS[kind].__name__) is TEACHERS[kind]
    with pytest.raises(UnknownName, match="unknown teacher kind 'auto'; expected one of simulated, pool, hf, openai"):
        teachers.build_teacher(RunConfig().teacher, None)  # "auto" is resolved by load_config, never built
    assert issubclass(UnknownName, UserInputError) and issubclass(UnknownName, KeyError)


def test_listing_and_checking_names_imports_nothing():
    registry = Registry("thing")
    registry.register("lazy", "no_such_module_anywhere:Thing", help="never imported")
    assert "lazy" in registry and list(registry) == ["lazy"] and registry.describe() == "lazy (never imported)"
    assert registry.get("other", "fallback") == "fallback"  # a Mapping: unknown names are KeyErrors
    with pytest.raises(ModuleNotFoundError):
        registry["lazy"]
    with pytest.raises(ValueError, match="registered already"):
        registry.register("lazy", object)


def test_config_and_cli_stay_light():
    """config.py (and the CLI module) list and check every name without importing torch."""
    code = (
        "import sys, qcrd_plugin.config, qcrd_plugin.cli; "
        "print(sorted(m for m in ('torch', 'transformers', 'lm_eval') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_help_texts_list_every_registered_name():
    run_help, teach_help = help_of("run"), help_of("teach")
    for name in METHODS:
        assert f"{name} (" in run_help  # in the --method choices and described in its help
    for name in family_names():
        assert name in run_help and name in teach_help
    for kind in TEACHERS:
        assert f"{kind} ({TEACHERS.help(kind)})" in teach_help
    assert "[hf|openai]" in help_of("judge")
    prepare_help = help_of("data", "prepare")
    assert (
        "[" + "|".join((*real_families(), "all")) + "]" in prepare_help and ", ".join(source_names()) in prepare_help
    )
    listed = {key: text for key, _, text in describe_fields(RunConfig)}
    assert all(f"{n} ({METHODS.help(n)})" in listed["method.name"] for n in METHODS)


@pytest.fixture
def toy_method():
    METHODS.register("toy", "tests.nowhere:Toy", help="a method registered by a plugin")
    yield "toy"
    METHODS.unregister("toy")


def test_a_newly_registered_method_is_known_everywhere(toy_method):
    from qcrd_plugin.leaderboard import LeaderboardConfig, _method_order

    assert load_config(None, ["method.name=toy"]).method.name == "toy"
    assert "toy (a method registered by a plugin)" in help_of("run") and "|toy]" in help_of("run")
    assert (
        "toy (a method registered by a plugin)"
        in dict((k, h) for k, _, h in describe_fields(RunConfig))["method.name"]
    )
    assert LeaderboardConfig().methods[-1] == "toy" and _method_order("toy") < _method_order("unregistered")
    proc = invoke("config", "-o", "method.name=toy")
    assert proc.returncode == 0 and "name: toy" in proc.stdout
    with pytest.raises(ConfigError, match="not one of finetune, single_task, dss, mi, qcrd, toy"):
        load_config(None, ["method.name=toys"])


def _probe() -> click.Command:
    """A command with flags built from config fields; it prints what it received."""

    @click.command()
    @cli.config_options(
        {
            "--method": "method.name",
            "--rounds": "training.rounds",
            "--temperature -t": "teacher.temperature",
            "--spec": cli.Flag("task.spec", "A note.", click.Path(dir_okay=False)),
        }
    )
    @click.option("--other", default="x")
    def probe(config_flags, other):
        click.echo(f"{sorted(config_flags.items())} {other}")

    return probe


def test_options_built_from_fields_take_type_choices_bounds_and_help():
    probe = _probe()
    result = CliRunner().invoke(probe, ["--rounds", "3", "-t", "1", "--method", "dss"])
    assert (
        result.exit_code == 0
        and result.output.strip() == "[('method.name', 'dss'), ('teacher.temperature', 1.0), ('training.rounds', 3)] x"
    )
    assert CliRunner().invoke(probe, []).output.strip() == "[] x"  # flags not given are left out
    text = CliRunner().invoke(probe, ["--help"], terminal_width=400).output
    assert "Training rounds; lm-eval evaluates after each. Overrides `training.rounds`.  [x>=1]" in text
    assert "[0.0<=x<=2.0]" in text and "[finetune|single_task|dss|mi|qcrd]" in text and "A note." in text
    assert [p.name for p in probe.params][:4] == [
        "config__method__name",
        "config__training__rounds",
        "config__teacher__temperature",
        "config__task__spec",
    ]


@pytest.mark.parametrize(
    "args, needles",
    [
        (["--rounds", "0"], ["'--rounds' (key 'training.rounds')", "0 is below the minimum 1"]),
        (["-t", "2.5"], ["'--temperature' / '-t' (key 'teacher.temperature')", "2.5 is above the maximum 2.0"]),
        (["-t", "nan"], ["'-t'", "expected a finite number"]),
        (["--rounds", "two"], ["'--rounds'", "'two' is not a valid integer"]),
        (["--method", "magic"], ["'--method' (key 'method.name')", "'magic' is not one of"]),
    ],
)
def test_an_option_built_from_a_field_refuses_a_bad_value_naming_the_flag(args, needles):
    result = CliRunner().invoke(_probe(), args)
    assert result.exit_code == 2
    for needle in needles:
        assert needle in result.output


@pytest.mark.parametrize(
    "args, needles",
    [
        (["run", "--rounds", "0"], ["'--rounds' (key 'training.rounds')", "below the minimum 1"]),
        (
            ["teach", "--task", "synth", "-k", "65", "--out", "p.jsonl"],
            ["'--samples' / '-k' (key 'teacher.samples')", "above the maximum 64"],
        ),
        (["run", "--task", "bogus"], ["'--task' (key 'task.name')", "'bogus' is not one of 'synth'"]),
        (
            ["teach", "--teacher", "nope", "--out", "p.jsonl"],
            ["'--teacher' (key 'teacher.kind')", "'auto', 'simulated'"],
        ),
    ],
)
def test_the_real_commands_refuse_an_out_of_range_flag_with_exit_2_and_one_line(args, needles):
    proc = invoke(*args)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("qcrd-bench: error: Invalid value for ")
    for needle in needles:
        assert needle in lines[0]


def test_every_existing_flag_and_alias_still_sets_its_key():
    def flags(command: str) -> dict:
        return {opt: getattr(p, "config_key", None) for p in cli.main.commands[command].params for opt in p.opts}

    run, teach = flags("run"), flags("teach")
    assert {
        o: run[o]
        for o in ("--name", "--output-dir", "--task", "--data-dir", "--method", "--rounds", "--seed", "--device")
    } == {
        "--name": "name",
        "--output-dir": "output_dir",
        "--task": "task.name",
        "--data-dir": "task.data_dir",
        "--method": "method.name",
        "--rounds": "training.rounds",
        "--seed": "training.seed",
        "--device": "training.device",
    }
    assert (
        teach["-k"] == teach["--samples"] == "teacher.samples"
        and teach["-t"] == teach["--temperature"] == "teacher.temperature"
    )
    assert (
        teach["--teacher"] == "teacher.kind" and teach["--cache"] == "teacher.cache" and teach["--spec"] == "task.spec"
    )
    for command in (run, teach):
        assert "-o" in command and "--set" in command and "--config" in command  # not config keys: declared by hand


def test_config_field_finds_leaves_only():
    assert config_field("training.seed")[0] is int and config_field("training.seed")[1]["max"] == 2**32 - 1
    assert config_field("name")[2] == "default"
    for key in ("training", "training.nope", "nope", "name.extra"):
        with pytest.raises(KeyError):
            config_field(key)
