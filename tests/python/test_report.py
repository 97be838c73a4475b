"""`cnf report`: the HTML page over run folders holds every run's metrics, escapes what users
named, and opens in a real browser (headless Chromium) without script errors and not blank.

Chromium is optional for a developer's run (the browser tests are skipped without it) but
required where CNF_REQUIRE_BROWSER=1 (make test sets it; scripts/setup.sh installs chromium)."""
import json
import os
import shutil
import struct
import subprocess
import tempfile
import time
import zlib

import pytest

EVIL = '<script>alert("x")'  # a run folder named like markup ('/' cannot be in a name)


def browser():
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CNF_REQUIRE_BROWSER") == "1":
            pytest.fail("chromium not found, but CNF_REQUIRE_BROWSER=1: run scripts/setup.sh")
        pytest.skip("chromium not installed (scripts/setup.sh installs it)")
    return path


def chromium(path, *args, timeout=120):
    """Runs headless Chromium on a local file; returns (stdout, stderr, seconds). A profile
    folder of its own (no HOME needed), no sandbox (CI runs as root), /tmp instead of a small
    /dev/shm (containers)."""
    start = time.monotonic()
    with tempfile.TemporaryDirectory() as profile:
        r = subprocess.run(
            [browser(), "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--enable-logging=stderr",
             "--v=0", *args, path.as_uri()],
            capture_output=True, text=True, timeout=timeout)
    return r.stdout, r.stderr, time.monotonic() - start


def png_pixels(data):
    """Decodes an 8-bit, non-interlaced RGB(A) PNG (what Chromium writes) into rows of bytes."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    width, height, depth, color, _, _, interlace = header
    assert depth == 8 and color in (2, 6) and interlace == 0, header
    bpp = 3 if color == 2 else 4
    raw, stride, rows, prev = zlib.decompress(idat), width * bpp, [], bytearray(width * bpp)
    for y in range(height):
        f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if f == 1:
                line[i] = (line[i] + a) & 255
            elif f == 2:
                line[i] = (line[i] + b) & 255
            elif f == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif f == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        rows.append(bytes(line))
        prev = line
    return width, height, bpp, rows


@pytest.fixture(scope="module")
def runs(tmp_path_factory, cnf_binary):
    """Two short training runs under one folder, one of them named like a script tag."""
    root = tmp_path_factory.mktemp("runs")
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    for name, data in (("moons", "moons"), (EVIL, "8gaussians")):
        r = subprocess.run([cnf_binary, "train", "--data", data, "--steps", "150", "--width", "16",
                            "--eval-n", "100", "--quiet", "--out", str(root / name)],
                           capture_output=True, text=True, env=env)
        assert r.returncode == 0, r.stdout + r.stderr
    return root


def test_report_holds_every_run_and_escapes_names(cnf, runs, tmp_path):
    out = tmp_path / "report.html"
    printed = cnf("report", runs, "--out", out)
    assert "2 runs" in printed
    page = out.read_text()
    for name in ("moons", EVIL):
        metrics = json.loads((runs / name / "metrics.json").read_text())
        # The side-by-side table shows W2 as %.4g, sortable by its value.
        assert f"data-v='{metrics['w2']:.4g}'" in page, name
    assert "&lt;script&gt;alert(&quot;x&quot;)" in page
    assert '<script>alert("x")' not in page  # the name never appears as markup
    assert page.count("<script>") == 1  # the page's own script only
    assert "http://" not in page and "https://" not in page  # nothing fetched from a network
    # Each training run wrote its own report and its loss plot at the end.
    assert (runs / "moons" / "report.html").exists() and (runs / "moons" / "loss.png").exists()


def test_report_refuses_folders_without_runs(cnf_binary, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    for folder, message in ((tmp_path / "missing", "is not a folder"), (empty, "no run found")):
        r = subprocess.run([cnf_binary, "report", str(folder)], capture_output=True, text=True)
        assert r.returncode == 1 and message in r.stderr and str(folder) in r.stderr, r.stderr
        assert not (folder / "report.html").exists()


def check_in_browser(page, tmp_path):
    """Opens the page: it must finish its script (data-report-ready) with no error or console
    message, and its screenshot must not be blank. Returns the seconds the screenshot took
    (load, layout and paint; the DOM dump also serializes every inlined image)."""
    dom, log, seconds = chromium(page, "--dump-dom")
    assert 'data-report-ready="1"' in dom, log[-2000:]
    assert 'data-report-error="' not in dom, dom[:2000]  # set by the page on a script error
    console = [line for line in log.splitlines() if "CONSOLE" in line]
    assert not console, console
    shot = tmp_path / "shot.png"
    _, _, seconds = chromium(page, f"--screenshot={shot}", "--window-size=1200,1600")
    width, height, bpp, rows = png_pixels(shot.read_bytes())
    assert (width, height) == (1200, 1600)
    # Not blank: a good share of the pixels is not background, in many colors (text, plots).
    colors, inked = set(), 0
    for row in rows[::4]:
        for x in range(0, width * bpp, 4 * bpp):
            px = row[x:x + 3]
            colors.add(px)
            inked += px != b"\xff\xff\xff"
    assert inked > 0.03 * (width // 4) * (height // 4), inked  # > 3%: plots, tables, text
    assert len(colors) > 50, len(colors)
    return seconds


def test_report_opens_in_a_real_browser(cnf, runs, tmp_path):
    browser()
    out = tmp_path / "report.html"
    cnf("report", runs, "--out", out)
    check_in_browser(out, tmp_path)


def test_report_of_fifty_runs_opens_in_a_browser(cnf, runs, tmp_path):
    browser()
    many = tmp_path / "many"
    for k in range(50):  # copies of a real run, each with its own W2
        run = many / f"run{k:02d}"
        shutil.copytree(runs / "moons", run)
        metrics = json.loads((run / "metrics.json").read_text())
        metrics["w2"] = 0.2 + 0.01 * k
        (run / "metrics.json").write_text(json.dumps(metrics))
    out = tmp_path / "many.html"
    assert "50 runs" in cnf("report", many, "--out", out)
    seconds = check_in_browser(out, tmp_path)
    blank = tmp_path / "blank.html"
    blank.write_text("<!doctype html><title>blank</title><p>blank")
    _, _, start = chromium(blank, f"--screenshot={tmp_path / 'blank.png'}")
    print(f"50-run report ({out.stat().st_size / 1e6:.1f} MB): screenshot in {seconds:.1f} s, "
          f"a blank page's in {start:.1f} s")
    # A guard against a page that hangs, not a timing benchmark: Chromium's start alone takes
    # about 1-2 s here, and a machine under load may take several times longer.
    assert seconds < 30
