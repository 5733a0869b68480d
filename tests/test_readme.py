"""The README's commands, run as written: every command block that needs no training, no GPU, no
data set and no more than a few seconds per command, so the README cannot drift from the CLI.

Commands are the lines of the README's shell blocks (fences without a language, or sh, bash,
shell, console) that start with `toolkit ` (a trailing backslash continues a line). They run in
order, in one temporary folder that holds what the examples name (cat.png, photos/, theirs.onnx,
mynet.py, …) and a `models/` of links to the checkout's models, with TOOLKIT_MODELS and
TOOLKIT_CACHE pointing inside it, so nothing is written into the checkout. A command is skipped
only by a rule of SKIP (each says why), or when the block follows `<!-- readme-test: skip -->`;
`bench` gets fewer runs (QUICK). Every other command must exit 0.

Run: .venv/bin/pytest tests/test_readme.py (a minute or two on 2 cores: each command is a process)
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
TOOLKIT = Path(sys.executable).with_name("toolkit")
SKIP_MARKER = "<!-- readme-test: skip -->"
SHELL_FENCES = ("", "sh", "bash", "shell", "console")

# (pattern searched in the command, why it is not run here)
SKIP = (
    (r"^toolkit train\b", "trains a model"),
    (r"--provider (cuda|tensorrt)\b|--device cuda", "needs a GPU"),
    (r"\bdata/|cifar-10-batches-py", "needs a data set (make data)"),
    (r"^toolkit export --model \S+ --precision int8", "int8 calibration reads the data set"),
    (r"^toolkit bench\b(?!.*--model)", "benchmarks every shipped model: minutes"),
    (r"^toolkit bench\b.*--shape", "names a model with inputs `input` and `mask`, an example of the option"),
    (r"^toolkit export --model (cifar-cnn|cifar-resnet|dcgan)\b",
     "exports a zoo model through torch with its parity gate: tens of seconds (make models runs these)"),
)
# Appended to a command so that it runs in seconds; the command is otherwise as written.
QUICK = ((r"^toolkit bench\b", ["--runs", "3", "--warmup", "1", "--no-roof"]),)


def readme_commands(text: str) -> list[tuple[int, str]]:
    """(line number, command) for every `toolkit …` line of the README's shell blocks."""
    commands = []
    for block in re.finditer(r"^```(\w*)\n(.*?)^```", text, re.MULTILINE | re.DOTALL):
        before = text[:block.start()].rstrip().splitlines()
        if block.group(1) not in SHELL_FENCES or (before and before[-1].strip() == SKIP_MARKER):
            continue
        first = text[:block.start()].count("\n") + 2
        joined = block.group(2).replace("\\\n", " ")
        line_numbers = [first + i for i, line in enumerate(block.group(2).splitlines())
                        if not block.group(2).splitlines()[i - 1].endswith("\\") or i == 0]
        for number, line in zip(line_numbers, joined.splitlines()):
            if line.startswith("toolkit "):
                commands.append((number, re.sub(r"\s+", " ", line).strip()))
    return commands


def skipped(command: str) -> str | None:
    return next((why for pattern, why in SKIP if re.search(pattern, command)), None)


COMMANDS = readme_commands(README.read_text())


def test_the_readme_has_commands_and_most_of_them_run():
    runnable = [c for _, c in COMMANDS if not skipped(c)]
    assert len(runnable) >= 20, runnable
    assert len(runnable) > len(COMMANDS) - len(runnable)


def test_the_block_parser_joins_continued_lines_and_honours_the_marker():
    text = ("```\ntoolkit a --x 1 \\\n    --y 2   # note\nmake b\n```\n\n" + SKIP_MARKER +
            "\n```\ntoolkit c\n```\n```python\ntoolkit d\n```\n")
    assert [c for _, c in readme_commands(text)] == ["toolkit a --x 1 --y 2 # note"]


# ----------------------------------------------------------------------------- the folder the examples name

NET = """
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


def make_net():
    return Net()
"""


def foreign_classifier(path: Path, classes: int = 3) -> None:
    """A float NCHW 224×224 classifier with one output `probs` (a softmax), as made elsewhere."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    weights = numpy_helper.from_array(np.random.default_rng(0).normal(size=(3, classes)).astype(np.float32), "w")
    nodes = [helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
             helper.make_node("Flatten", ["pooled"], ["flat"]), helper.make_node("MatMul", ["flat", "w"], ["scores"]),
             helper.make_node("Softmax", ["scores"], ["probs"], axis=1)]
    graph = helper.make_graph(nodes, "theirs",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, 224, 224])],
                              [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", classes])], [weights])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8), str(path))


def user_module(folder: Path) -> None:
    """mynet.py:Net with net.safetensors, and mypackage.nets:make_net with net.pt."""
    import torch
    from safetensors.torch import save_file
    (folder / "mynet.py").write_text(NET)
    (folder / "mypackage").mkdir()
    (folder / "mypackage" / "__init__.py").write_text("")
    (folder / "mypackage" / "nets.py").write_text(NET)
    namespace: dict = {}
    exec(compile(NET, "mynet.py", "exec"), namespace)
    torch.manual_seed(0)
    state = namespace["Net"]().state_dict()
    save_file(state, str(folder / "net.safetensors"))
    torch.save(state, folder / "net.pt")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    pytest.importorskip("torch")
    work = tmp_path_factory.mktemp("readme")
    models = work / "models"
    models.mkdir()
    for item in (ROOT / "models").iterdir():
        (models / item.name).symlink_to(item)
    samples = sorted((ROOT / "models" / "samples").iterdir())
    shutil.copytree(ROOT / "models" / "samples", work / "photos")
    shutil.copy(ROOT / "models" / "samples" / "cat.jpg", work / "cat.png")
    shutil.copy(ROOT / "models" / "samples" / "dog.jpg", work / "dog.jpg")
    for name, sample in (("photo.jpg", samples[0]), ("a.png", samples[1]), ("b.png", samples[2])):
        Image.open(sample).convert("RGB").resize((64, 64)).save(work / name)
    foreign_classifier(work / "theirs.onnx")
    foreign_classifier(work / "caffe_style.onnx")
    (work / "labels.txt").write_text("cat\ndog\nbird\n")
    user_module(work)
    return work


@pytest.mark.slow
@pytest.mark.parametrize("line,command", COMMANDS, ids=[f"README.md:{n}" for n, _ in COMMANDS])
def test_readme_command_runs(workdir, line, command):
    if why := skipped(command):
        pytest.skip(why)
    env = {**{k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "TOOLKIT_DEBUG")},
           "TOOLKIT_MODELS": str(workdir / "models"), "TOOLKIT_CACHE": str(workdir / "cache")}
    args = shlex.split(command, comments=True)
    args += [a for pattern, extra in QUICK if re.search(pattern, command) for a in extra]
    done = subprocess.run([str(TOOLKIT), *args[1:]], cwd=workdir, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, f"README.md:{line}: {command}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
