"""The HParams table and scalars of a real sweep, as a real `tensorboard` server serves them.

A sweep over `optim=sgd,adamw` is the hard case: the two optimizers have different
keys, so unless every job writes the same union of keys with the same types,
TensorBoard either drops columns or refuses to filter (a column with mixed types
raises in its session-group filter).
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from conftest import TINY, read_metrics, run_dirs

from sampler.blocks import POOLS
from sampler.experiments.train.optim import OPTIMIZERS

TENSORBOARD = Path(sys.executable).with_name("tensorboard")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, logdir: Path):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}/data/plugin"
        self.log = open(logdir.parent / "tensorboard.log", "w")
        self.proc = subprocess.Popen([str(TENSORBOARD), "--logdir", str(logdir), "--host", "127.0.0.1",
                                      "--port", str(self.port), "--reload_interval", "1"],
                                     stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ})

    def post(self, path: str, body: dict) -> dict:
        request = urllib.request.Request(self.base + path, data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)

    def get(self, path: str) -> object:
        with urllib.request.urlopen(self.base + path, timeout=10) as response:
            return json.load(response)

    def wait_for(self, ready, timeout: float = 90):  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc.poll() is None, Path(self.log.name).read_text()
            try:
                result = ready()
                if result:
                    return result
            except (urllib.error.URLError, ConnectionError):
                pass  # still starting
            assert time.monotonic() < deadline, "tensorboard served no data in time:\n" + Path(self.log.name).read_text()
            time.sleep(0.5)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.log.close()


def session_groups(server: Server, infos: dict, metrics: list, **changes: dict) -> dict:
    """The request TensorBoard's own HParams table sends: every column, discrete filters on."""
    cols = []
    for name, info in infos.items():
        col: dict = {"hparam": name, "order": "ORDER_UNSPECIFIED"}
        if "domainDiscrete" in info:
            col["filterDiscrete"] = info["domainDiscrete"]
        col.update(changes.get(name, {}))
        cols.append(col)
    cols += [{"metric": m["name"]} for m in metrics]
    return server.post("/hparams/session_groups", {
        "experimentName": "", "colParams": cols, "aggregationType": "AGGREGATION_AVG",
        "allowedStatuses": ["STATUS_UNKNOWN", "STATUS_SUCCESS", "STATUS_FAILURE", "STATUS_RUNNING"],
        "startIndex": 0, "sliceSize": 100})


def test_hparams_and_scalars_served_by_a_real_tensorboard(cli, tmp_path: Path) -> None:
    overrides = [o for o in TINY if not o.startswith("trainer.epochs")]
    cli("train", "-m", "optim=sgd,adamw", "seed=0", "trainer.epochs=2", *overrides, check=True)
    (sweep,) = (tmp_path / "outputs" / "multirun").iterdir()
    runs = {read_metrics(d)["config"]["optim"]["name"]: (d, read_metrics(d)) for d in run_dirs(sweep)}
    server = Server(sweep)
    try:
        experiment = server.wait_for(lambda: (lambda e: e if e.get("hparamInfos") else None)(
            server.post("/hparams/experiment", {"experimentName": ""})))
        infos = {h["name"]: h for h in experiment["hparamInfos"]}
        # the union: both optimizers' own keys are columns, whichever job's experiment TensorBoard read
        assert {"optim.momentum", "optim.nesterov", "optim.betas", "optim.eps"} <= set(infos)
        assert infos["model.pool"]["domainDiscrete"] == POOLS.names()
        assert infos["optim.name"]["domainDiscrete"] == OPTIMIZERS.names()  # every shipped option
        assert infos["trainer.channels_last"]["domainDiscrete"] == ["false", "true"]
        assert infos["optim.lr"]["type"] == "DATA_TYPE_FLOAT64"
        # The swept key leads, marked as differing, so TensorBoard shows it first.
        assert experiment["hparamInfos"][0]["name"] == "optim.name" and experiment["hparamInfos"][0]["differs"]
        assert not any(h.get("differs") for h in experiment["hparamInfos"][1:])
        metric_tags = {m["name"]["tag"] for m in experiment["metricInfos"]}
        assert {"test/acc", "val/acc_best", "train/images_per_s", "memory/step_peak_mb"} <= metric_tags

        groups = server.wait_for(lambda: (lambda g: g if g.get("totalSize") == 2 else None)(
            session_groups(server, infos, experiment["metricInfos"])))
        by_optim = {g["hparams"]["optim.name"]: g for g in groups["sessionGroups"]}
        assert set(by_optim) == {"sgd", "adamw"}
        # The Trial ID names what differs, not the run's long directory.
        assert {g["name"] for g in groups["sessionGroups"]} == {"optim=sgd", "optim=adamw"}
        for name, group in by_optim.items():
            assert set(group["hparams"]) == set(infos), f"{name}: every job writes every key"
            for tag in ("test/acc", "memory/step_peak_mb"):
                value = next(m["value"] for m in group["metricValues"] if m["name"]["tag"] == tag)
                assert value == pytest.approx(runs[name][1][tag], rel=1e-6), tag
        for key in infos:  # one type per column: TensorBoard can filter and sort all of them
            assert len({type(g["hparams"][key]) for g in groups["sessionGroups"]}) == 1, key
        assert by_optim["adamw"]["hparams"]["optim.momentum"] == "none"
        assert by_optim["sgd"]["hparams"]["optim.momentum"] == "0.9"

        only_adamw = session_groups(server, infos, experiment["metricInfos"],
                                    **{"optim.name": {"filterDiscrete": ["adamw"]}})
        assert [g["hparams"]["optim.name"] for g in only_adamw["sessionGroups"]] == ["adamw"]
        by_lr = session_groups(server, infos, experiment["metricInfos"], **{"optim.lr": {"order": "ORDER_DESC"}})
        assert [g["hparams"]["optim.name"] for g in by_lr["sessionGroups"]] == ["sgd", "adamw"]  # 0.05 > 0.002

        tags = server.get("/scalars/tags")
        for name, (run_dir, metrics) in runs.items():
            run = str(run_dir.relative_to(sweep))
            assert {"train/loss", "val/acc", "test/acc", "lr"} <= set(tags[run])
            query = urllib.parse.urlencode({"run": run, "tag": "val/acc"})
            points = server.get(f"/scalars/scalars?{query}")
            assert [step for _, step, _ in points] == [1, 2]
            assert [v for _, _, v in points] == pytest.approx([row["val/acc"] for row in metrics["history"]],
                                                              rel=1e-6)
        # Train and val of a metric share a chart (Custom Scalars).
        layout = server.get("/custom_scalars/layout")
        charts = {c["title"]: c["multiline"]["tag"] for cat in layout["category"] for c in cat["chart"]}
        assert charts["loss"] == ["^train/loss$", "^val/loss$"] and charts["acc"] == ["^train/acc$", "^val/acc$"]
    finally:
        server.stop()
