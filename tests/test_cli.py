"""The real CLI in a subprocess: commands, Hydra flags, error paths and exit codes."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import TINY, read_metrics, run_dirs

from sampler.blocks import build_model
from sampler.experiments.errors import ConfigError
from sampler.experiments.train.env import resolve_precision


def test_ls_lists_every_registry_and_preset(cli) -> None:
    out = cli("ls", check=True).stdout
    for name in ("model.pool", "max", "avg", "model.norm", "batch", "group", "model.act", "leaky_relu",
                 "adamw", "airbench_sgd", "onecycle", "pool_max_vs_avg", "cifar10_fast",
                 "Max or average pooling?", "Does BatchNorm still help here?"):  # a preset's question
        assert name in out, name
    # the keys a registry entry is chosen by: the group (optim=adamw), never optim.name=adamw
    keys = {line.split("│")[1].strip() for line in out.splitlines() if line.count("│") >= 3}
    assert {"optim", "sched", "data", "task"} <= keys and not keys & {"optim.name", "sched.name", "data.name",
                                                                     "task.name"}, keys


@pytest.mark.parametrize("args,key,needle", [
    (["task.name=segmentation"], "task.name", "choose it with task=segmentation"),
    (["data.name=camvid"], "data.name", "choose it with data=camvid"),
    (["sched.name=cosine"], "sched.name", "keep the other sched.* keys of onecycle"),
    (["task=segmentation", "data.name=cifar10"], "data.name", "keys of camvid"),  # task's own data choice
    (["data=camvid"], "data", "use task=segmentation"),  # CamVid under the classification task
    (["task=segmentation", "data=cifar10"], "data", "use task=classification, or a segmentation data set: camvid"),
])
def test_choosing_a_data_set_task_or_schedule_by_its_name_key_is_refused(cli, tmp_path: Path, args: list[str],
                                                                         key: str, needle: str) -> None:
    proc = cli("train", *args)
    said = " ".join(proc.stderr.split())
    assert proc.returncode == 2 and f"error: {key}:" in said and needle in said, proc.stderr
    assert "Traceback" not in said and not (tmp_path / "outputs").exists()


def test_inspect_builds_without_data_and_counts_params(cli) -> None:
    proc = cli("inspect", "model.widths=[16,32]", "model.pool=avg", "data.root=/nonexistent", check=True)
    expected = sum(p.numel() for p in build_model(widths=[16, 32], pool="avg").parameters())
    assert f"{expected:,}" in proc.stdout
    assert "AvgPool2d" in proc.stdout and "1x32x8x8" in proc.stdout
    assert "receptive field of the encoder's output: 10 px" in proc.stdout
    from sampler.experiments.train.cost import activation_memory

    memory = activation_memory(build_model(widths=[16, 32], pool="avg"), torch.zeros(64, 3, 32, 32),
                               lambda out: out.mean())  # 64: the default trainer.batch_size
    assert (f"{memory['saved'] / 2**20:.2f} MB saved for backward, {memory['train_peak'] / 2**20:.2f} MB at the "
            f"training step's peak, {memory['inference_peak'] / 2**20:.2f} MB") in proc.stdout


def test_cfg_job_prints_the_composed_config(cli) -> None:
    out = cli("train", "--cfg", "job", "model.pool=avg", check=True).stdout
    assert "pool: avg" in out and "widths:" in out and "trainer:" in out


@pytest.mark.parametrize("args,needle", [
    (["train", "-m", "model.pool=max,avg", "--cfg", "job"], "--cfg: --cfg prints the config of one run, not a sweep's"),
    (["train", "--multirun", "--info"], "--multirun and --info cannot go together"),
    (["train", "--cfg=job", "-i"], "--cfg and --info cannot go together"),
    (["inspect", "-m", "model.pool=max,avg"], "`sampler inspect` takes only overrides (key=value), not -m"),
    (["inspect", "--cfg", "job"], "use `sampler train --cfg job <overrides>`"),
    (["data", "-m"], "`sampler data` takes only overrides (key=value), not -m"),
])
def test_hydra_flags_that_cannot_apply_are_one_paragraph_and_exit_2(cli, tmp_path: Path, args: list[str],
                                                                    needle: str) -> None:
    proc = cli(*args)
    assert proc.returncode == 2, proc.stderr
    assert needle in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "Exception" not in proc.stderr
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("args,key,needle", [
    (["model.pool=maxx"], "model.pool", "avg, conv, max, none"),
    (["model.order=[conv,norm,act]"], "model.order", "for example [conv,norm,act,pool] or"),  # not eaten as markup
    (["model.widths=[8,8,8,8,8,8]"], "model.widths", "stages"),
    (["trainer.epochs=0"], "trainer.epochs", "positive integer"),
    (["trainer.device=tpu"], "trainer.device", "auto, cpu, cuda, mps"),
    (["trainer.compile=sometimes"], "trainer.compile", "true, false or auto"),
    (["trainer.threads=true"], "trainer.threads", "positive integer or null"),
    (["optim.name=adam"], "optim.name", "adamw, muon, sgd"),
    (["experiment=cifar10_fast", "optim=adamw"], "optim", "tunes optim.lr=0.2 for sgd"),
    (["optim.name=muon"], "optim.name", "choose the optimizer with optim=muon"),
    (["data.root=/nonexistent", "data.download=false"], "data.root", "data.download=auto"),
])
def test_user_errors_are_one_paragraph_and_exit_2(cli, tmp_path: Path, args: list[str], key: str,
                                                  needle: str) -> None:
    proc = cli("train", *args)
    assert proc.returncode == 2, proc.stderr
    assert key in proc.stderr and needle in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    # nothing left behind, not even an empty outputs/runs (data.root is only found wrong
    # once the run has started its record)
    assert not (tmp_path / "outputs").exists(), list((tmp_path / "outputs").rglob("*"))


@pytest.mark.parametrize("command,args,key,needle", [
    ("train", ["optim=adm"], "optim", "did you mean adamw? choose one of: adamw, airbench_sgd, muon, sgd"),
    ("train", ["experiment=quikstart"], "experiment", "did you mean quickstart?"),
    ("train", ["-m", "sched=cosine,cosin"], "sched", "'cosin' is not one of its options"),  # one value of a sweep
    ("train", ["hydra/launcher=jobllib"], "hydra/launcher", "did you mean joblib?"),  # a plugin's option
    ("train", ["experiment=null"], "experiment", "~experiment"),  # Hydra itself raises a ValueError
    ("inspect", ["task=segmentaton"], "task", "did you mean segmentation?"),
    ("data", ["data=cifar"], "data", "choose one of: camvid, cifar10, pets"),
])
def test_a_group_option_that_does_not_exist_is_one_paragraph_and_exit_2(cli, tmp_path: Path, command: str,
                                                                        args: list[str], key: str, needle: str) -> None:
    proc = cli(command, *args)
    said = " ".join(proc.stderr.split())
    assert proc.returncode == 2 and f"error: {key}:" in said and needle in said, proc.stderr
    assert "Traceback" not in said and "search path" not in said.lower(), "not Hydra's own message"
    assert not (tmp_path / "outputs").exists(), "nothing was started"


@pytest.mark.parametrize("args,said", [
    (["model.pool=max,avgg", "seed=0"], "unknown pool 'avgg'; choose one of: avg, conv, max, none (with "
                                        "model.pool=avgg, a value of this sweep: no job was started)"),
    (["model.widths=[8,16],[8,0]", "seed=0,1"], "(with model.widths=[8,0], a value of this sweep"),
    (["trainer.epochs=abc", "seed=0,1"], "trainer.epochs: 'abc' must be a positive integer"),  # every job's
])
def test_a_bad_value_in_a_sweep_is_refused_before_any_job_runs(cli, tmp_path: Path, args: list[str],
                                                                 said: str) -> None:
    proc = cli("train", "-m", *args, *(a for a in TINY if not a.startswith("trainer.epochs=")))
    flat = " ".join(proc.stderr.split())
    assert proc.returncode == 2 and said in flat and "Traceback" not in flat, proc.stderr
    assert not (tmp_path / "outputs").exists(), "no job ran, no sweep dir"


def test_an_error_paragraph_wraps_at_words_on_a_terminal_and_is_one_line_in_a_pipe() -> None:
    import io

    from rich.console import Console

    from sampler.cli.errors import report

    error = ConfigError("optim", "experiment=cifar10_fast tunes optim.lr=0.2 for sgd (train.yaml's default); with "
                        "optim=adamw that value would be handed to adamw, whose own default is optim.lr=0.002")
    terminal = Console(file=io.StringIO(), force_terminal=True, width=60, color_system=None)
    report(error, terminal)
    lines = terminal.file.getvalue().splitlines()
    assert len(lines) > 2 and max(map(len, lines)) <= 60
    assert " ".join(line.strip() for line in lines) == f"error: optim: {error.message}", "no word cut in two"
    pipe = Console(file=io.StringIO(), width=60)
    report(error, pipe)
    assert pipe.file.getvalue() == f"error: optim: {error.message}\n"


def test_resume_of_no_earlier_run_is_refused_before_a_run_dir_exists(cli, tmp_path: Path) -> None:
    proc = cli("train", "resume=true", "data.subset=100")
    assert proc.returncode == 2 and "resume" in proc.stderr and "no earlier run" in proc.stderr
    assert not (tmp_path / "outputs").exists(), "no empty run dir is left behind"


def test_a_misspelt_key_is_named_with_a_suggestion(cli) -> None:
    proc = cli("train", "model.poool=avg")
    assert proc.returncode == 2
    assert "model.poool" in proc.stderr and "model.pool" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("command", ["train", "inspect"])
def test_a_new_model_key_on_purpose_is_refused_as_a_model_key(cli, command: str) -> None:
    # What the misspelt key's message suggests (+model.pol=...) must be named model.pol, not head.pol.
    proc = cli(command, "+model.pol=avg", "data.root=/nonexistent")
    assert proc.returncode == 2, proc.stderr
    assert "error: model.pol: no model key pol; the stack takes: " in proc.stderr and "pool" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_override_check_composes_only_for_keys_some_option_lacks(monkeypatch) -> None:
    # Keys that every composition has are checked without composing (a third of a second of
    # every start-up); a key that only some options have still gets the exact, composed check.
    from sampler.experiments.tools import config

    composed = []
    real = config.compose
    monkeypatch.setattr(config, "compose", lambda o: composed.append(list(o)) or real(o))
    config.check_override_keys(["seed=1", "model.pool=avg", "optim.lr=0.1", "data.augment.flip=false"])
    assert composed == []
    # Keys of the chosen options only are read from their files, where no preset or task
    # changes other groups' choices: cifar10's val_size, sgd's momentum.
    config.check_override_keys(["data.val_size=500", "data.test_size=500"])
    config.check_override_keys(["optim=sgd", "optim.momentum=0.8"])
    assert composed == []
    with pytest.raises(ConfigError) as e:
        config.check_override_keys(["optim=adamw", "optim.momentum=0.8"])  # adamw has not: composed
    assert e.value.key == "optim.momentum" and "is not a config key" in e.value.message
    assert composed == [["optim=adamw"]]
    config.check_override_keys(["task=segmentation", "task.class_balance=1"])  # it changes data and head
    config.check_override_keys(["experiment=camvid_fast", "task.class_balance=0.5"])
    assert composed[1:] == [["task=segmentation"], ["experiment=camvid_fast"]]
    with pytest.raises(ConfigError) as e:
        config.check_override_keys(["trainer.epoch=3"])
    assert "trainer.epochs" in e.value.message


def _check_optim(args: list[str]) -> None:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from sampler.experiments.tools import config

    config.check_optimizer_choice(OverridesParser.create().parse_overrides(args))


def test_a_presets_optimizer_values_never_reach_another_optimizer() -> None:
    # For every preset and every optimizer option a command line can pick: either the pick
    # is refused, naming the preset's tuned keys, or the optimizer trains with its own
    # values (exactly what `optim=X` alone composes), never with the preset's.
    from importlib import resources

    from sampler.experiments.tools import config
    from sampler.experiments.tools.listing import experiment_presets

    options = sorted(f.name[:-5] for f in (resources.files("sampler.configs") / "optim").iterdir()
                     if f.name.endswith(".yaml"))
    refused, swapped = [], 0
    for preset in experiment_presets():
        own = config.compose([f"experiment={preset}"])["optim"]
        for option in options:
            args = [f"experiment={preset}", f"optim={option}"]
            try:
                _check_optim(args)
            except ConfigError as e:
                assert e.key == "optim" and f"experiment={preset} tunes optim." in e.message
                refused.append((preset, option))
                continue
            got = config.compose(args)["optim"]
            if got != own:
                assert got == config.compose([f"optim={option}"])["optim"], (preset, option)
                swapped += 1
    assert ("cifar10_fast", "adamw") in refused and ("camvid_fast", "sgd") in refused
    assert not [r for r in refused if r[0] in ("cifar10_90", "cifar10_10min", "cifar10_94")], refused
    assert swapped >= 10


def test_a_presets_optimizer_keys_given_again_are_the_users_choice() -> None:
    _check_optim(["experiment=cifar10_fast", "optim=adamw", "optim.lr=0.003"])
    _check_optim(["experiment=cifar10_fast", "optim=sgd"])  # its own optimizer
    _check_optim(["optim=muon", "optim.name=muon"])
    _check_optim(["optim.name=adam"])  # no such option: the registry names the choices
    with pytest.raises(ConfigError) as e:
        _check_optim(["experiment=camvid_fast", "optim=adamw,sgd"])  # each swept value is checked
    assert e.value.key == "optim" and "optim=sgd" in e.value.message and "optim.lr=0.05" in e.value.message


def test_the_keys_read_from_the_chosen_options_are_those_hydra_composes() -> None:
    # The override check trusts chosen_keys instead of composing: for every option of every
    # group, it must name exactly the keys of Hydra's composition, or decline (None).
    from importlib import resources

    from sampler.experiments.runs.hparams import flatten
    from sampler.experiments.tools import config

    root, read = resources.files("sampler.configs"), 0
    for group in sorted(config.config_groups() - {"experiment", "hydra"}):
        for option in sorted(f.name[:-5] for f in (root / group).iterdir() if f.name.endswith(".yaml")):
            static = config.chosen_keys([f"{group}={option}"])
            if static is None:
                continue
            composed = flatten(config.compose([f"{group}={option}"]))
            assert static == set(composed) | {p for k in composed for p in config._prefixes(k)}, (group, option)
            read += 1
    assert read >= 12
    assert config.chosen_keys(["task=segmentation"]) is None  # `override /data: camvid`
    assert config.chosen_keys(["experiment=cifar10_90"]) is None and config.chosen_keys(["head=null"]) is None
    assert config.chosen_keys(["data=nosuch"]) is None


@pytest.mark.parametrize("source", ["jpeg_tree", "pickles",
                                    pytest.param("shared", marks=pytest.mark.real_data("cifar10"))])
def test_train_end_to_end(cli, tmp_path: Path, request: pytest.FixtureRequest, source: str) -> None:
    # jpeg_tree: the generated cifar10/<split>/<class>/*.jpg; pickles: the generated official
    # cifar-10-batches-py/; shared: the real shared copy
    data = request.getfixturevalue("fake_cifar_pickles") if source == "pickles" else None
    proc = cli("train", *TINY, "seed=3", check=True, data=data)
    (run,) = run_dirs(tmp_path / "outputs")
    m = read_metrics(run)
    assert m["status"] == "completed" and m["seed"] == 3 and m["error"] is None
    for key in ("test/acc", "val/acc_best", "train/images_per_s", "time/total_s", "model/params",
                "model/flops", "memory/saved_activations_mb", "memory/step_peak_mb", "memory/inference_peak_mb",
                "precision", "versions", "git"):
        assert m[key] is not None, key
    assert 0.0 <= m["test/acc"] <= 1.0
    assert m["precision"] == resolve_precision("auto", torch.device("cpu"))  # bf16 where the CPU has it natively
    assert m["overrides"] == [*TINY, "seed=3"]
    assert len(m["history"]) == 1 and m["history"][0]["epoch"] == 1
    assert (run / ".hydra" / "config.yaml").is_file() and list(run.glob("events.out.tfevents.*"))
    assert (run / "checkpoint.pt").is_file()
    assert "test acc" in proc.stdout


def test_same_seed_same_result(cli, tmp_path: Path) -> None:
    cli("train", *TINY, check=True)
    cli("train", *TINY, check=True)
    a, b = (read_metrics(r) for r in run_dirs(tmp_path / "outputs"))
    assert a["history"][0]["train/loss"] == b["history"][0]["train/loss"]
    assert a["test/acc"] == b["test/acc"]


def test_multirun_two_jobs(cli, tmp_path: Path) -> None:
    cli("train", "-m", "model.pool=max,avg", *TINY, check=True)
    runs = run_dirs(tmp_path / "outputs" / "multirun")
    assert len(runs) == 2
    metrics = [read_metrics(r) for r in runs]
    assert sorted(m["config"]["model"]["pool"] for m in metrics) == ["avg", "max"]
    assert all(m["status"] == "completed" for m in metrics)
    assert "model.pool=avg" in runs[1].name or "model.pool=avg" in runs[0].name


def test_a_diverging_run_is_recorded_and_named(cli, tmp_path: Path) -> None:
    proc = cli("train", *TINY, "optim.lr=1e12", "model.norm=none", "trainer.label_smoothing=0.0")
    assert proc.returncode == 2, proc.stderr
    assert "optim.lr" in proc.stderr
    (run,) = run_dirs(tmp_path / "outputs")
    assert read_metrics(run)["status"] == "diverged"


def _ctrl_c_able(cmd: list[str], cwd: Path, env: dict) -> subprocess.Popen:
    # A shell's background job (`cmd &`, nohup) starts with SIGINT ignored, and Python then
    # installs no KeyboardInterrupt handler: give the child the default disposition, as a
    # terminal user's process has.
    return subprocess.Popen([sys.executable, "-m", "sampler.cli.app", *cmd], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


@pytest.mark.parametrize("checkpoint", [True, False])
def test_ctrl_c_records_interrupted_and_exits_130(tmp_path: Path, cache_dir: Path, data_root: Path,
                                                  checkpoint: bool) -> None:
    import os

    env = {**os.environ, "SAMPLER_DATA": str(data_root), "SAMPLER_CACHE": str(cache_dir), "COLUMNS": "400"}
    proc = _ctrl_c_able(["train", "data.subset=2000", "trainer.epochs=50", "model.widths=[8,16]", "trainer.threads=1",
                         f"trainer.checkpoint={str(checkpoint).lower()}"], tmp_path, env)
    deadline = time.time() + 120
    while time.time() < deadline:  # wait until the first epoch is on record
        runs = run_dirs(tmp_path / "outputs")
        if runs and read_metrics(runs[0])["history"]:
            break
        time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("the run never finished an epoch")
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    m = read_metrics(runs[0])
    assert m["status"] == "interrupted" and m["history"]
    json.loads((runs[0] / "metrics.json").read_text())  # complete, parseable
    # The line names the run and says what resume= will do with what it left.
    said = err.strip().splitlines()[-1]
    assert said.startswith(f"interrupted: {runs[0]} records status 'interrupted'"), err
    if checkpoint:
        assert said.endswith(f"`sampler train resume={runs[0]}` continues it from its last checkpoint"), err
    else:
        assert "no checkpoint (trainer.checkpoint=false)" in said and said.endswith("again from epoch 1"), err


@pytest.mark.parametrize("again", [None, 0.05])
def test_ctrl_c_while_the_cli_loads_is_one_line_and_exit_130(tmp_path: Path, again: float | None) -> None:
    """Ctrl-C in the first seconds (torch loading), once or twice 50 ms apart: no traceback,
    no 'Exception ignored' from Python's shutdown, no death by SIGINT (-2)."""
    import os

    proc = _ctrl_c_able(["train", "trainer.epochs=1"], tmp_path, dict(os.environ))
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    if again:
        time.sleep(again)
        proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert len(err.strip().splitlines()) == 1 and err.startswith("interrupted"), err
    assert not (tmp_path / "outputs").exists()
