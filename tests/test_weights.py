"""Weights registry, cache, verified downloads from a loopback server, and safe loading."""

import functools
import http.server
import os
import shutil
import threading
from pathlib import Path

import pytest
import torch

import fastdeblur
from fastdeblur import WeightsError
from fastdeblur.weights import get_weights, load_weights_into, resolve_files, sha256_of

pytestmark = pytest.mark.needs_data
MODEL = "dmphn-1-2-4-gopro"


@pytest.fixture
def serve(tmp_path):
    """Serve a folder on 127.0.0.1; yields a function folder -> base URL."""
    servers = []

    def start(root: Path) -> str:
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
        handler.log_message = lambda *a: None
        srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}"

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


@pytest.fixture
def mirror(tmp_path, data_dir):
    """A copy of the authors' DMPHN(1-2-4) layout that a test may tamper with."""
    root = tmp_path / "mirror"
    shutil.copytree(data_dir / "dmphn_official" / "checkpoints" / "DMPHN_1_2_4", root / "checkpoints" / "DMPHN_1_2_4")
    return root


@pytest.fixture
def fresh_home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("FASTDEBLUR_HOME", str(home))
    return home


def test_registry_names_and_alias():
    assert fastdeblur.list_models() == ["dmphn-1-2-4-8-gopro", "dmphn-1-2-4-gopro", "fastdeblur-default",
                                        "stack4-dmphn-gopro"]
    assert get_weights("default").name == MODEL
    for name in fastdeblur.list_models():
        w = get_weights(name)
        assert all(len(h) == 64 for h in w.files.values()) and w.license and w.description
        assert w.bundled or w.source_url.endswith(f"/checkpoints/{w.folder}/")


def test_unknown_model_is_named():
    with pytest.raises(WeightsError, match="unknown model 'dmphn-9'; known models: .*dmphn-1-2-4-gopro"):
        fastdeblur.load_model("dmphn-9")
    # a near miss gets the name it likely meant: a typo, another case, a name cut short
    for typed, meant in (("dmphn-124", "dmphn-1-2-4-gopro"), ("DMPHN-1-2-4-8", "dmphn-1-2-4-8-gopro"),
                         ("stack4", "stack4-dmphn-gopro"), ("defualt", "default")):
        with pytest.raises(WeightsError, match=f"unknown model '{typed}'; did you mean '{meant}'\\? known models"):
            get_weights(typed)
    # a registered name in another case is that name
    assert get_weights("DMPHN-1-2-4-GoPro").name == "dmphn-1-2-4-gopro"
    assert get_weights(" Default ").name == get_weights("default").name


def test_the_mirror_must_be_a_url(monkeypatch):
    """FASTDEBLUR_OFFICIAL_URL: http(s):// or file://; a bare folder gets the file:// it meant (it
    was a ValueError traceback from urllib when a download started); empty means unset."""
    from fastdeblur.errors import ConfigError
    from fastdeblur.weights import OFFICIAL_URL, official_url

    for value, said in (("/srv/mirror", "got '/srv/mirror'; for a local folder: file:///srv/mirror"),
                        ("ftp://host/x", "got 'ftp://host/x'$")):
        monkeypatch.setenv("FASTDEBLUR_OFFICIAL_URL", value)
        with pytest.raises(ConfigError, match="FASTDEBLUR_OFFICIAL_URL must be an http://, https:// or file:// URL, "
                                              + said):
            official_url()
    for value, url in (("", OFFICIAL_URL), ("file:///srv/mirror/", "file:///srv/mirror"),
                       (" HTTPS://host/m ", "HTTPS://host/m")):
        monkeypatch.setenv("FASTDEBLUR_OFFICIAL_URL", value)
        assert official_url() == url


def test_download_from_loopback_server_verifies_and_caches(serve, mirror, fresh_home, monkeypatch):
    monkeypatch.setenv("FASTDEBLUR_OFFICIAL_URL", serve(mirror))
    files = resolve_files(MODEL)
    folder = fresh_home / "checkpoints" / "DMPHN_1_2_4"
    assert sorted(files) == sorted(get_weights(MODEL).files)
    assert all(p.parent == folder and sha256_of(p) == get_weights(MODEL).files[f] for f, p in files.items())
    assert not list(folder.glob("*.part"))
    # second resolution is served from the cache: the server may be gone
    monkeypatch.setenv("FASTDEBLUR_OFFICIAL_URL", "http://127.0.0.1:9")
    assert resolve_files(MODEL) == files


def test_download_without_stderr(mirror, fresh_home, monkeypatch):
    """A daemon's or pythonw's sys.stderr is None: asking it whether it is a terminal (to show the
    download's progress bar) was an AttributeError, so such a process could not fetch weights."""
    monkeypatch.setenv("FASTDEBLUR_OFFICIAL_URL", mirror.as_uri())
    monkeypatch.setattr("sys.stderr", None)
    files = resolve_files(MODEL)
    assert all(sha256_of(p) == get_weights(MODEL).files[f] for f, p in files.items())


def test_tampered_download_is_refused_and_not_kept(serve, mirror, fresh_home, monkeypatch):
    bad = mirror / "checkpoints" / "DMPHN_1_2_4" / "decoder_lv2.pkl"
    data = bytearray(bad.read_bytes())
    data[5000] ^= 0xFF
    bad.write_bytes(bytes(data))
    monkeypatch.setenv("FASTDEBLUR_OFFICIAL_URL", serve(mirror))
    with pytest.raises(WeightsError, match="decoder_lv2.pkl fails its sha256 check.*not kept"):
        resolve_files(MODEL)
    folder = fresh_home / "checkpoints" / "DMPHN_1_2_4"
    assert not (folder / "decoder_lv2.pkl").exists()
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("length", [True, False], ids=["content-length", "streamed"])
def test_an_oversized_download_is_cut_off(fresh_home, monkeypatch, length):
    """A mirror that answers with something far larger than a weights file (a disk image, an
    endless stream) is refused by its Content-Length, or cut off past the limit when it sends
    none, instead of filling the disk before the sha256 check; nothing is kept."""
    import fastdeblur.weights as weights

    class Endless(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            if length:
                self.send_header("Content-Length", str(10 * 2**30))
            self.end_headers()
            try:
                for _ in range(2**14):  # 1 GiB if nobody stops reading
                    self.wfile.write(bytes(2**16))
            except OSError:  # the client hung up: what is wanted
                pass

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Endless)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        monkeypatch.setattr(weights, "_MAX_DOWNLOAD_BYTES", 2**20)
        monkeypatch.setenv("FASTDEBLUR_OFFICIAL_URL", f"http://127.0.0.1:{srv.server_address[1]}")
        with pytest.raises(WeightsError, match=r"is larger than any weights file \(over 1 MiB\): not a weights "
                                               r"file; the file was not kept"):
            resolve_files(MODEL)
    finally:
        srv.shutdown()
        srv.server_close()
    folder = fresh_home / "checkpoints" / "DMPHN_1_2_4"
    assert not folder.exists() or not list(folder.iterdir())


def test_damaged_cache_file_is_replaced(serve, mirror, fresh_home, monkeypatch):
    monkeypatch.setenv("FASTDEBLUR_OFFICIAL_URL", serve(mirror))
    path = resolve_files(MODEL)["encoder_lv3.pkl"]
    path.write_bytes(b"garbage")
    assert sha256_of(resolve_files(MODEL)["encoder_lv3.pkl"]) == get_weights(MODEL).files["encoder_lv3.pkl"]


def test_missing_weights_offline_say_what_to_do(fresh_home, monkeypatch):
    monkeypatch.setenv("FASTDEBLUR_OFFLINE", "1")
    with pytest.raises(WeightsError, match=r"(?s)FASTDEBLUR_OFFLINE.*Fix: .*weights=<directory"):
        resolve_files(MODEL)


@pytest.mark.parametrize("value,offline", [("1", True), ("Yes", True), ("on", True), ("0", False),
                                           ("false", False), ("OFF", False), ("", False)])
def test_env_switches_read_words_alike(monkeypatch, value, offline):
    """FASTDEBLUR_OFFLINE, _CUDA_GRAPHS and _MALLOC_TUNING take 1/true/yes/on and 0/false/no/off
    (FASTDEBLUR_OFFLINE=false used to mean offline); anything else names the variable."""
    from fastdeblur import InputError
    from fastdeblur.errors import env_flag

    monkeypatch.setenv("FASTDEBLUR_OFFLINE", value)
    assert env_flag("FASTDEBLUR_OFFLINE", False) is offline
    assert env_flag("FASTDEBLUR_OFFLINE", True) is (offline or value == "")
    monkeypatch.setenv("FASTDEBLUR_CUDA_GRAPHS", "maybe")
    with pytest.raises(InputError, match="FASTDEBLUR_CUDA_GRAPHS must be one of 1/true/yes/on or 0/false/no/off, "
                                         "got 'maybe'"):
        env_flag("FASTDEBLUR_CUDA_GRAPHS", True)


def test_offline_false_still_downloads(fresh_home, monkeypatch):
    monkeypatch.setenv("FASTDEBLUR_OFFLINE", "false")
    monkeypatch.setenv("FASTDEBLUR_OFFICIAL_URL", "http://127.0.0.1:9")  # discard port: refused
    with pytest.raises(WeightsError, match="downloading"):  # it tried the network
        resolve_files(MODEL)


def test_unreachable_server_is_a_clear_error(fresh_home, monkeypatch):
    monkeypatch.setenv("FASTDEBLUR_OFFICIAL_URL", "http://127.0.0.1:9")  # discard port: refused
    with pytest.raises(WeightsError, match="downloading encoder_lv1.pkl failed"):
        resolve_files(MODEL)


def test_a_cache_that_cannot_be_written_names_fastdeblur_home(tmp_path, monkeypatch, mirror):
    """FASTDEBLUR_HOME naming a file (or a folder the cache cannot be made in) is said as such, not
    as a failed download whose fix is to connect to the network."""
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("FASTDEBLUR_HOME", str(tmp_path / "file"))
    monkeypatch.setenv("FASTDEBLUR_OFFICIAL_URL", mirror.as_uri())
    with pytest.raises(WeightsError, match=r"^the weights cache .*file/checkpoints/DMPHN_1_2_4 cannot be written "
                                           r"\(Not a directory\): set FASTDEBLUR_HOME to a writable folder") as e:
        resolve_files(MODEL)
    assert "connect to the network" not in str(e.value)


def test_explicit_directory_is_verified(mirror, data_dir):
    files = resolve_files(MODEL, mirror / "checkpoints")  # a parent of the authors' folder works too
    assert len(files) == 6
    bad = mirror / "checkpoints" / "DMPHN_1_2_4" / "encoder_lv1.pkl"
    bad.write_bytes(bad.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(WeightsError, match="encoder_lv1.pkl fails its sha256 check"):
        resolve_files(MODEL, mirror / "checkpoints" / "DMPHN_1_2_4")
    with pytest.raises(WeightsError, match="does not exist"):
        resolve_files(MODEL, mirror / "nowhere")


def test_corrupt_weights_file_is_refused(tmp_path):
    model = get_weights(MODEL).build()
    corrupt = tmp_path / "encoder_lv1.pkl"
    corrupt.write_bytes(b"\x80\x02not really a pickle")
    with pytest.raises(WeightsError, match="could not be read as a checkpoint"):
        load_weights_into(model, {"encoder_lv1.pkl": corrupt})


def test_wrong_weights_file_is_refused(tmp_path):
    model = get_weights(MODEL).build()
    wrong = tmp_path / "encoder_lv1.pkl"
    torch.save(model.decoder_lv1.state_dict(), wrong)  # a decoder where an encoder belongs
    with pytest.raises(WeightsError, match="does not fit encoder_lv1"):
        load_weights_into(model, {"encoder_lv1.pkl": wrong})


def test_pickled_code_is_never_executed(tmp_path):
    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    path = tmp_path / "encoder_lv1.pkl"
    torch.save({"layer1.weight": Evil()}, path)
    with pytest.raises(WeightsError):
        load_weights_into(get_weights(MODEL).build(), {"encoder_lv1.pkl": path})
    assert not (tmp_path / "pwned").exists()


def test_load_model_gives_eval_module_without_grad(default_model):
    assert not default_model.training
    assert not any(p.requires_grad for p in default_model.parameters())
    assert default_model.weights_name == MODEL
