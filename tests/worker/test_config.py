"""Job types from TOML: what loads, and the errors for what does not."""

from pathlib import Path

import pytest

from jobdeck.domain.jobtypes import BUILTIN_TYPES, JobType, ParameterSpec
from jobdeck.worker.config import load_job_types

GOOD = """
[types.thumbnail]
kind = "python"
target = "myjobs.images:thumbnail"
description = "Makes a thumbnail."
execution_duration = 60
max_log_bytes = 65536
parameters = { path = "path", width = { type = "int", default = 128, description = "Pixels." } }

[types.render]
kind = "command"
command = ["blender", "-b", "{scene}", "-f", "{frame}"]
parameters = { scene = "path", frames = { type = "string", default = "1-3" } }
task_parameters = { frame = "{frames}" }

[types.grid]
kind = "command"
command = ["echo", "{x}", "{y}"]
task_parameters = { x = "1-2", y = 3 }
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "jobdeck.toml"
    path.write_text(text)
    return path


def test_no_file_means_the_builtins() -> None:
    assert load_job_types(None) == BUILTIN_TYPES
    assert load_job_types(None) is not BUILTIN_TYPES


def test_a_good_file(tmp_path: Path) -> None:
    types = load_job_types(write(tmp_path, GOOD))
    assert set(types) == {*BUILTIN_TYPES, "thumbnail", "render", "grid"}
    assert types["thumbnail"] == JobType(
        name="thumbnail",
        kind="python",
        target="myjobs.images:thumbnail",
        parameters={
            "path": ParameterSpec("path"),
            "width": ParameterSpec("int", 128, "Pixels."),
        },
        execution_duration=60,
        description="Makes a thumbnail.",
        max_log_bytes=65536,
    )
    render = types["render"]
    assert render.kind == "command" and render.target == ""
    assert render.max_log_bytes == 16 * 2**20  # the default
    assert render.command == ("blender", "-b", "{scene}", "-f", "{frame}")
    assert render.parameters["frames"] == ParameterSpec("string", "1-3")
    assert render.parameters["scene"].required
    tasks = render.expand_tasks(render.validate({"scene": "a.blend"}))
    assert tasks == [{"frame": 1}, {"frame": 2}, {"frame": 3}]
    grid = types["grid"]
    assert grid.task_parameters == {"x": "1-2", "y": "3"}
    assert grid.expand_tasks({}) == [{"x": 1, "y": 3}, {"x": 2, "y": 3}]


def test_a_default_is_coerced_to_its_type(tmp_path: Path) -> None:
    text = """
[types.t]
kind = "python"
target = "m:f"
parameters = { r = { type = "float", default = 2 } }
"""
    types = load_job_types(write(tmp_path, text))
    default = types["t"].parameters["r"].default
    assert default == 2.0 and isinstance(default, float)


def test_an_empty_file_has_the_builtins(tmp_path: Path) -> None:
    assert load_job_types(write(tmp_path, "")) == BUILTIN_TYPES


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ('[types.t]\nkind = "shell"', 'kind must be "python" or "command", not \'shell\''),
        ("[types.t]\ntarget = 'm:f'", "kind must be"),
        ('[types.t]\nkind = "builtin"\ntarget = "noop"', "kind must be"),
        ('[types.t]\nkind = "python"', 'needs target = "module:function"'),
        ('[types.t]\nkind = "python"\ntarget = "just_a_module"', "needs target"),
        ('[types.t]\nkind = "python"\ntarget = "m:f"\ncommand = ["x"]', "takes no 'command'"),
        ('[types.t]\nkind = "command"', "needs command = ["),
        ('[types.t]\nkind = "command"\ncommand = []', "needs command = ["),
        ('[types.t]\nkind = "command"\ncommand = "ls -l"', "needs command = ["),
        ('[types.t]\nkind = "command"\ncommand = ["ls", 1]', "needs command = ["),
        ('[types.t]\nkind = "command"\ncommand = ["ls"]\ntarget = "m:f"', "takes no 'target'"),
        (
            '[types.t]\nkind = "command"\ncommand = ["ls", "{where}"]',
            "command element '{where}' names undeclared parameter 'where'",
        ),
        (
            '[types.t]\nkind = "python"\ntarget = "m:f"\nparameters = { n = "integer" }',
            "parameter 'n' has type 'integer'",
        ),
        (
            '[types.t]\nkind = "python"\ntarget = "m:f"\nparameters = { n = { default = 1 } }',
            "parameter 'n' has type None",
        ),
        (
            '[types.t]\nkind = "python"\ntarget = "m:f"\n'
            'parameters = { n = { type = "int", default = "many" } }',
            "default of parameter 'n' must be a int",
        ),
        (
            '[types.t]\nkind = "python"\ntarget = "m:f"\n'
            'parameters = { n = { type = "int", dflt = 1 } }',
            "parameter 'n' has unknown key 'dflt'",
        ),
        (
            '[types.t]\nkind = "python"\ntarget = "m:f"\nparameters = { "a b" = "int" }',
            "parameter name 'a b'",
        ),
        (
            '[types.t]\nkind = "python"\ntarget = "m:f"\ntask_parameters = { i = "{n}" }',
            "task parameter 'i' names undeclared parameter 'n'",
        ),
        (
            '[types.t]\nkind = "python"\ntarget = "m:f"\ntask_parameters = { i = "9-1" }',
            "task parameter 'i': not an increasing range",
        ),
        (
            '[types.t]\nkind = "python"\ntarget = "m:f"\nparameters = { i = "int" }\n'
            'task_parameters = { i = "1-2" }',
            "'i' is both a parameter and a task parameter",
        ),
        (
            '[types.t]\nkind = "python"\ntarget = "m:f"\nexecution_duration = -1',
            "execution_duration must be",
        ),
        (
            '[types.t]\nkind = "python"\ntarget = "m:f"\nexecution_duration = 1.5',
            "execution_duration must be",
        ),
        (
            # A job keeps it in a 32-bit column: PostgreSQL refused every job of the type.
            '[types.t]\nkind = "python"\ntarget = "m:f"\nexecution_duration = 2147483648',
            "execution_duration must be a whole number of seconds, from 0 to 2147483647",
        ),
        (
            '[types.t]\nkind = "python"\ntarget = "m:f"\nmax_log_bytes = -1',
            "max_log_bytes must be",
        ),
        (
            '[types.t]\nkind = "python"\ntarget = "m:f"\nmax_log_bytes = "1MB"',
            "max_log_bytes must be",
        ),
        ('[types.t]\nkind = "python"\ntarget = "m:f"\ndescription = 3', "description must be"),
        ('[types.t]\nkind = "python"\ntarget = "m:f"\ncomand = ["x"]', "unknown key 'comand'"),
    ],
)
def test_bad_type_definitions(tmp_path: Path, text: str, complaint: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ValueError) as caught:
        load_job_types(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: type 't': "), message
    assert complaint in message


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("[types.noop]\nkind = 'python'\ntarget = 'm:f'", "type 'noop' is built in"),
        ("[type.t]\nkind = 'python'", "unknown section 'type'"),
        ("types = 3", "'types' must be a table"),
        ("[types]\nt = 3", "type 't': must be a table"),
        ("[types.t\nkind = 'python'", "not valid TOML"),
        ("[types.'a b']\nkind = 'python'\ntarget = 'm:f'", "type 'a b': a type name is"),
    ],
)
def test_bad_files(tmp_path: Path, text: str, complaint: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ValueError, match="^" + str(path)) as caught:
        load_job_types(path)
    assert complaint in str(caught.value)


def test_a_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"cannot read job types from .*nothing\.toml"):
        load_job_types(tmp_path / "nothing.toml")
