"""data.download: the official CIFAR-10 archive fetched, checked and unpacked, for real,
from an HTTP server on 127.0.0.1 that the test starts (never the internet)."""
from __future__ import annotations

import functools
import hashlib
import http.server
import io
import socket
import tarfile
import threading
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch

import fakedata
from conftest import TINY, run_dirs
from sampler.experiments.data import download
from sampler.experiments.data.cifar10 import load_cifar10, load_cifar10_tensors
from sampler.experiments.errors import ConfigError

TRAIN_PER_CLASS, TEST_PER_CLASS = 40, 10  # 400 training images: TINY takes 100 for val + 200


# ---------------------------------------------------------------- the archive and its server

@pytest.fixture(scope="module")
def cifar_images() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    return {"train": fakedata.cifar_images(TRAIN_PER_CLASS, 0), "test": fakedata.cifar_images(TEST_PER_CLASS, 1)}


def make_tar(path: Path, files: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, cifar_images) -> Iterator[dict]:
    """A folder served over HTTP on 127.0.0.1, holding cifar-10-python.tar.gz in the official
    layout (cifar-10-batches-py/ with data_batch_1..5, test_batch, batches.meta) and a few
    broken archives; yields their URLs, the good one's md5 and the request log."""
    src = tmp_path_factory.mktemp("archive-src")
    folder = fakedata.write_cifar10_pickles(src, cifar_images["train"], cifar_images["test"])
    www = tmp_path_factory.mktemp("www")
    good = www / "cifar-10-python.tar.gz"
    with tarfile.open(good, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    batches = {f"cifar-10-batches-py/{f.name}": f.read_bytes() for f in sorted(folder.iterdir())}
    make_tar(www / "escape.tar.gz", {**batches, "cifar-10-batches-py/../../evil": b"x"})
    make_tar(www / "incomplete.tar.gz", {k: v for k, v in batches.items() if not k.endswith("test_batch")})
    (www / "garbage.tar.gz").write_bytes(b"this is not a tar archive" * 100)

    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:  # quiet; the test reads `requests` instead
            requests.append(self.path)

        def do_GET(self) -> None:
            if self.path != "/truncated.tar.gz":
                return super().do_GET()
            self.send_response(200)  # promises the whole archive, sends 1,000 bytes and hangs up
            self.send_header("Content-Length", str(good.stat().st_size))
            self.end_headers()
            self.wfile.write(good.read_bytes()[:1000])
            self.close_connection = True

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(www)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield {"url": f"{base}/cifar-10-python.tar.gz", "base": base, "requests": requests,
               "md5": hashlib.md5(good.read_bytes()).hexdigest(), "names": leftovers(folder)}
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture
def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def leftovers(path: Path) -> list[str]:
    return sorted(p.name for p in path.iterdir()) if path.exists() else []


# ---------------------------------------------------------------- the library

def test_auto_downloads_checks_and_unpacks_the_official_layout(tmp_path: Path, served, cifar_images) -> None:
    root = tmp_path / "data" / "deeper"  # neither exists yet
    t = load_cifar10_tensors(root, "auto", tmp_path / "cache", url=served["url"], md5=served["md5"])
    train_x, train_y = cifar_images["train"]
    assert torch.equal(t["train_x"], torch.from_numpy(train_x)) and torch.equal(t["train_y"], torch.from_numpy(train_y))
    assert t["test_x"].shape == (10 * TEST_PER_CLASS, 3, 32, 32)
    # only the unpacked folder remains: no archive, no temporary file or folder
    assert leftovers(root) == ["cifar-10-batches-py"]
    assert leftovers(root / "cifar-10-batches-py") == served["names"]  # data_batch_1..5, test_batch, batches.meta, ...
    # a second load finds the copy and does not ask the server again
    asked = len(served["requests"])
    load_cifar10_tensors(root, "auto", tmp_path / "cache2", url=served["url"], md5=served["md5"])
    assert len(served["requests"]) == asked


def test_load_cifar10_downloads_with_true_and_draws_the_splits(tmp_path: Path, served) -> None:
    data = load_cifar10(str(tmp_path / "data"), download=True, val_size=100, subset=200, test_size=50,
                        cache_dir=str(tmp_path / "cache"), url=served["url"], md5=served["md5"])
    assert (len(data.train), len(data.val), len(data.test)) == (200, 100, 50)
    assert torch.bincount(data.test.labels).tolist() == [5] * 10


@pytest.mark.parametrize("root_exists", [False, True])
def test_a_wrong_checksum_leaves_nothing_behind(tmp_path: Path, served, root_exists: bool) -> None:
    root = tmp_path / "data"
    if root_exists:
        root.mkdir()
    with pytest.raises(ConfigError) as err:
        load_cifar10_tensors(root, "auto", tmp_path / "cache", url=served["url"], md5="0" * 32)
    assert err.value.key == "data.download"
    assert served["url"] in err.value.message and "checksum" in err.value.message
    assert served["md5"] in err.value.message  # what the file really has, for a stale data.md5
    assert root.is_dir() == root_exists and leftovers(root) == []


def test_an_unreachable_url_is_one_paragraph_naming_url_and_folder(tmp_path: Path, closed_port: int) -> None:
    url = f"http://127.0.0.1:{closed_port}/x.tar.gz"
    root = tmp_path / "data"
    with pytest.raises(ConfigError) as err:
        load_cifar10_tensors(root, "auto", tmp_path / "cache", url=url)
    message = err.value.message
    assert err.value.key == "data.download" and "\n" not in message
    assert f"could not download CIFAR-10 from {url} (" in message and "refused" in message
    assert f"unpack it into {root.resolve()} so that {root.resolve()}/cifar-10-batches-py/data_batch_1" in message
    assert "data.download=false" in message and "SAMPLER_DATA" in message
    assert not root.exists() and leftovers(tmp_path) == []  # not even the cache folder


def test_a_server_that_never_answers_times_out(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(download, "CONNECT_TIMEOUT_S", 0.5)
    with socket.socket() as silent:  # accepts connections (the backlog) but never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/cifar-10-python.tar.gz"
        with pytest.raises(ConfigError) as err:
            load_cifar10_tensors(tmp_path / "data", "auto", tmp_path / "cache", url=url)
    assert "(no answer within 0.5 s)" in err.value.message and not (tmp_path / "data").exists()


@pytest.mark.parametrize("name,reason", [("escape.tar.gz", "'cifar-10-batches-py/../../evil'"),
                                         ("incomplete.tar.gz", "no cifar-10-batches-py/test_batch"),
                                         ("garbage.tar.gz", "not a readable tar archive"),
                                         ("missing.tar.gz", "HTTP 404"),
                                         ("truncated.tar.gz", "the connection ")])
def test_a_bad_archive_is_refused_and_removed(tmp_path: Path, served, name: str, reason: str) -> None:
    root = tmp_path / "a" / "data"
    with pytest.raises(ConfigError) as err:
        load_cifar10_tensors(root, "auto", tmp_path / "cache", url=f"{served['base']}/{name}", md5=None)
    assert reason in err.value.message
    assert not (tmp_path / "a").exists() and not (tmp_path / "evil").exists() and not Path("/evil").exists()


def test_ctrl_c_during_the_download_removes_what_it_made(tmp_path: Path, served, monkeypatch) -> None:
    def interrupt(*_: object) -> None:
        raise KeyboardInterrupt
    monkeypatch.setattr(download._Progress, "advance", interrupt)
    root = tmp_path / "data"
    with pytest.raises(KeyboardInterrupt):  # stays Ctrl-C: the CLI exits 130
        load_cifar10_tensors(root, "auto", tmp_path / "cache", url=served["url"], md5=served["md5"])
    assert not root.exists()


def test_download_false_keeps_the_not_found_error(tmp_path: Path, closed_port: int) -> None:
    with pytest.raises(ConfigError) as err:
        load_cifar10_tensors(tmp_path / "nowhere", False, tmp_path / "cache",
                             url=f"http://127.0.0.1:{closed_port}/x.tar.gz")
    assert err.value.key == "data.root" and "data.download=auto" in err.value.message
    assert not (tmp_path / "nowhere").exists()


def test_a_bad_download_value_names_the_choices(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_cifar10_tensors(tmp_path, "yes", tmp_path / "cache")
    assert err.value.key == "data.download" and "auto, true or false" in err.value.message


# ---------------------------------------------------------------- through the CLI

def test_train_downloads_through_the_cli(cli, tmp_path: Path, served) -> None:
    data = tmp_path / "empty-data"
    data.mkdir()
    cli("train", f"data.url={served['url']}", f"data.md5={served['md5']}", "data.test_size=50", *TINY,
        check=True, data=data)
    assert leftovers(data) == ["cifar-10-batches-py"]
    (run,) = run_dirs(tmp_path / "outputs")
    log = (run / "train.log").read_text()
    assert "200 train / 100 val / 50 test images" in log and "md5 verified" in log


def test_train_offline_exits_2_with_one_paragraph_and_leaves_nothing(cli, tmp_path: Path, closed_port: int) -> None:
    data = tmp_path / "empty-data"
    data.mkdir()
    url = f"http://127.0.0.1:{closed_port}/cifar-10-python.tar.gz"
    proc = cli("train", f"data.url={url}", *TINY, data=data)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    (error,) = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert "data.download" in error and url in error and str(data) in error
    assert leftovers(data) == []


def test_a_sweep_downloads_once_before_its_jobs_start(cli, tmp_path: Path, served) -> None:
    """Parallel jobs would each try to fetch the archive into the same folder at once."""
    data = tmp_path / "empty-data"
    data.mkdir()
    before = served["requests"].count("/cifar-10-python.tar.gz")
    proc = cli("train", "-m", f"data.url={served['url']}", f"data.md5={served['md5']}", "data.test_size=50",
               *TINY, "seed=0,1", data=data)
    assert proc.returncode == 0, proc.stderr
    assert served["requests"].count("/cifar-10-python.tar.gz") == before + 1
    assert len(run_dirs(tmp_path / "outputs")) == 2


def test_an_offline_sweep_stops_before_any_job(cli, tmp_path: Path, closed_port: int) -> None:
    data = tmp_path / "empty-data"
    data.mkdir()
    proc = cli("train", "-m", f"data.url=http://127.0.0.1:{closed_port}/x.tar.gz", *TINY, "seed=0,1,2", data=data)
    assert proc.returncode == 2 and "data.download" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "outputs").exists() and leftovers(data) == []
