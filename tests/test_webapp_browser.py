"""The web app in a real browser: ``dynface serve`` in a subprocess, Debian's chromium driven by Playwright.

Uploads ``skimage.data.astronaut()``, restores it (embedded model), waits for the before/after slider and the
per-face table, downloads the zip and checks its CLI layout; a corrupt file gets its message in the page; the
page sends no request beyond the server (works offline); the server bound to 127.0.0.1 cannot be reached on
this machine's other addresses; the ``/restore`` API answers through ``gradio_client``, and refuses out-of-range
values with a reason and one line in the server's log (no traceback); at phone width (390 px) the per-face table's
headers wrap at word boundaries only.

The browser is Debian's ``chromium`` (``apt-get install chromium``; ``.ci/run`` installs it when missing),
launched with ``executable_path``: no browser is ever downloaded. Without it the browser tests are skipped
with that reason, except in CI (``CI=true``), where they fail. The screenshot goes to the test's temporary
folder; ``DYNFACE_WEBAPP_SCREENSHOT=1`` writes it to docs/webapp.png (the README's picture) instead.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None)
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

pytest.importorskip("gradio")


def _need_browser():
    """Playwright + Debian's chromium, or a skip with the reason (a failure in CI, where they must be there)."""
    why = None
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        why = "the playwright package is not installed (pip install -e '.[dev]')"
    if why is None and CHROMIUM is None:
        why = "Debian's chromium is not installed (apt-get install -y chromium; .ci/run installs it)"
    if why:
        if IN_CI:
            pytest.fail(f"browser test cannot run in CI: {why}")
        pytest.skip(why)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """``dynface serve`` on 127.0.0.1 and a free port; yields the base URL."""
    port = _free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    env.pop("DYNFACE_RESTORER_FACTORY", None)
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "dynface.cli", "serve", "--port", str(port), "--time-limit", "600"],
                                stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 240
    while True:
        if proc.poll() is not None:
            pytest.fail(f"dynface serve exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"dynface serve did not answer within 240 s:\n{log.read_text()[-3000:]}")
        time.sleep(1)
    yield SimpleServer(url, port, proc, log)
    proc.terminate()
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class SimpleServer:
    def __init__(self, url, port, proc, log):
        self.url, self.port, self.proc, self.log = url, port, proc, log


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("photos")
    Image.fromarray(data.astronaut()).save(d / "astronaut.png")
    raw = (d / "astronaut.png").read_bytes()
    (d / "broken.png").write_bytes(raw[: len(raw) // 4])
    (d / "huge.png").write_bytes(raw[:1000] + bytes(26 * 2**20 - 1000))  # 26 MB: over the server's 25 MB per file
    return {"astronaut": d / "astronaut.png", "broken": d / "broken.png", "huge": d / "huge.png"}


@pytest.fixture(scope="module")
def browser():
    _need_browser()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield b
        b.close()


def _upload_and_restore(page, path: Path, done_text: str) -> str:
    """Put ``path`` in the file box, wait for its name, click restore, wait for ``done_text`` in the status; the status."""
    page.locator("#files input[type=file]").set_input_files(str(path))
    page.wait_for_function(f"document.querySelector('#files').innerText.includes({path.stem!r})", timeout=60_000)
    page.click("#restore")
    page.wait_for_function(f"document.querySelector('#status').innerText.includes({done_text!r})", timeout=300_000)
    return page.inner_text("#status")


def _fill_kept(page, box, text: str) -> None:
    """Fill a textbox and make sure the page kept it: the Advanced accordion mounts its controls as it opens, and a
    value filled meanwhile could be dropped (the request then ran with the default steps: a flaky failure in CI)."""
    for _ in range(5):
        box.fill(text)
        box.press("Tab")
        page.wait_for_timeout(400)
        if box.input_value() == text:
            return
    raise AssertionError(f"the page did not keep {text!r} in the textbox")


def test_restore_in_the_browser(server, browser, photos, tmp_path):
    page = browser.new_page(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    page.goto(server.url)
    page.wait_for_selector("#restore", timeout=60_000)
    assert "Do not use it to identify anyone" in page.inner_text("body")  # what a restored face is, said up front

    # a photo: restored, slider + table + explanation shown; Restore is off and Stop on while it runs; a screen
    # reader hears the status's text when it changes, not Gradio's progress timer (accessibility audit)
    page.wait_for_function("document.querySelector('#status-live')?.getAttribute('aria-live') === 'polite'",
                           timeout=30_000)
    assert page.get_attribute("#status", "aria-live") is None
    page.evaluate("""() => { window.__live = []; new MutationObserver(() => window.__live.push(
        document.querySelector('#status-live').textContent)).observe(document.querySelector('#status-live'),
        {subtree: true, childList: true, characterData: true}); }""")
    page.locator("#files input[type=file]").set_input_files(str(photos["astronaut"]))
    page.wait_for_function("document.querySelector('#files').innerText.includes('astronaut')", timeout=60_000)
    page.click("#restore")
    page.wait_for_function("document.querySelector('#restore').disabled && !document.querySelector('#stop').disabled",
                           timeout=30_000)
    page.wait_for_function("document.querySelector('#status').innerText.includes('file(s) restored')", timeout=300_000)
    page.wait_for_function("!document.querySelector('#restore').disabled && document.querySelector('#stop').disabled",
                           timeout=30_000)
    status = page.inner_text("#status")
    assert "1 of 1 file(s) restored" in status and "astronaut.png: 1 face(s) restored" in status
    page.wait_for_function("window.__live.length && window.__live.at(-1).includes('1 of 1 file(s) restored')",
                           timeout=10_000)
    said = page.evaluate("window.__live")
    assert len(said) <= 3 and not any("processing" in t for t in said), said
    table = page.inner_text("#table")
    assert "astronaut.png" in table and "std*" in table and "NFE" in table
    page.wait_for_function(
        "[...document.querySelectorAll('#slider img')].filter(i => i.complete && i.naturalWidth > 0).length >= 2",
        timeout=60_000)
    sizes = page.eval_on_selector_all("#slider img", "els => els.map(e => [e.naturalWidth, e.naturalHeight])")
    assert [1024, 1024] in sizes  # the restored photo, upscaled x2
    page.wait_for_function("document.querySelectorAll('#explain img').length >= 5", timeout=60_000)
    assert page.eval_on_selector_all("#slider img", "els => els.map(e => e.alt)")[:2] == [
        "before: the input", "after: the restoration"]
    page.wait_for_function("[...document.querySelectorAll('#explain button')].some(b => "
                           "(b.getAttribute('aria-label') || '').startsWith('RM(y)'))", timeout=10_000)

    # names, descriptions and contrast (accessibility audit): each control's info text is read with it, the sample
    # buttons are named, the info texts are dark enough (WCAG AA: 4.5:1 for small text)
    desc = page.evaluate("""() => { const c = document.querySelector('input[type=range]');
        return (c.getAttribute('aria-describedby') || '').split(' ').map(i => document.getElementById(i)?.innerText)
        .join(' '); }""")
    assert "the model's default" in desc, desc
    assert all(page.eval_on_selector_all("#samples button", "els => els.map(e => e.getAttribute('aria-label'))"))
    rgb = page.evaluate("getComputedStyle(document.querySelector('.info-text')).color")
    lum = [((c / 255) / 12.92 if c / 255 <= 0.04045 else ((c / 255 + 0.055) / 1.055) ** 2.4)
           for c in map(int, re.findall(r"\d+", rgb)[:3])]
    assert 1.05 / (0.2126 * lum[0] + 0.7152 * lum[1] + 0.0722 * lum[2] + 0.05) >= 4.5, rgb  # on white

    # the zip, in the CLI's layout
    with page.expect_download(timeout=60_000) as dl:
        page.locator("#zip a").first.click()
    zpath = tmp_path / "results.zip"
    dl.value.save_as(zpath)
    names = set(zipfile.ZipFile(zpath).namelist())
    assert {"restored_imgs/astronaut.png", "restored_faces/astronaut_00.png", "cropped_faces/astronaut_00.png",
            "cmp/astronaut_00.png", "records/astronaut.json", "manifest.jsonl", "maps/astronaut_00_dgsa.png",
            "maps/astronaut_00_guide0.png"} <= names

    # the screenshot (the README's picture with DYNFACE_WEBAPP_SCREENSHOT=1)
    shot = ROOT / "docs" / "webapp.png" if os.environ.get("DYNFACE_WEBAPP_SCREENSHOT") == "1" else tmp_path / "webapp.png"
    page.screenshot(path=str(shot), full_page=True)
    img = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert img.shape[1] == 1400 and img.shape[0] > 900 and img.std() > 20

    # a corrupt file: its message in the page
    page.locator("#files button[aria-label='Clear']").click()
    page.wait_for_function("!document.querySelector('#files').innerText.includes('astronaut')", timeout=30_000)
    status = _upload_and_restore(page, photos["broken"], "✗ broken.png")
    assert "0 of 1 file(s) restored" in status
    assert "✗ broken.png: corrupt or truncated image data" in status

    # a file over the server's 25 MB with another one: its own line, the other one still handled (Gradio's own cap
    # refused the whole selection with a toast that faded)
    page.locator("#files button[aria-label='Clear']").click()
    page.wait_for_function("!document.querySelector('#files').innerText.includes('broken')", timeout=30_000)
    page.locator("#files input[type=file]").set_input_files([str(photos["huge"]), str(photos["broken"])])
    page.wait_for_function("document.querySelector('#files').innerText.includes('huge')"
                           " && document.querySelector('#files').innerText.includes('broken')", timeout=60_000)
    page.click("#restore")
    page.wait_for_function("document.querySelector('#status').innerText.includes('✗ huge.png')", timeout=120_000)
    status = page.inner_text("#status")
    assert "0 of 2 file(s) restored" in status and "✗ broken.png: corrupt" in status
    assert "✗ huge.png: file too large (26.0 MB; this server accepts up to 25 MB)" in status

    # a bundled sample, one click (it also ticks "aligned"), restored as an aligned crop
    page.locator("#files button[aria-label='Clear']").click()
    page.locator("#samples button.gallery-item").nth(1).click()
    page.wait_for_function("document.querySelector('#aligned input').checked", timeout=30_000)
    page.wait_for_function("document.querySelector('#pasted img') !== null", timeout=30_000)
    page.click("#restore")
    page.wait_for_function("document.querySelector('#status').innerText.includes('✓ ')", timeout=300_000)
    assert "1 of 1 file(s) restored" in page.inner_text("#status")
    assert "astronaut_lq.png" in page.inner_text("#table")

    # the restored faces tab: a whole thumbnail per face (Gradio 6 stretched one face over the width, cut to the
    # gallery's height)
    page.get_by_role("tab", name="Restored faces").click()
    page.wait_for_function("(() => { const i = document.querySelector('#gallery img');"
                           " return i && i.complete && i.getBoundingClientRect().width > 0; })()", timeout=30_000)
    img_w, img_h, gal_w, gal_h = page.eval_on_selector(
        "#gallery img", "e => { const r = e.getBoundingClientRect(), g = e.closest('#gallery').getBoundingClientRect();"
                        " return [r.width, r.height, g.width, g.height]; }")
    assert img_w < gal_w / 3 and img_h < gal_h, (img_w, img_h, gal_w, gal_h)

    # photos dropped after a sample: the sample leaves the paste box and "aligned" (which it ticked) is unticked
    page.locator("#files input[type=file]").set_input_files(str(photos["astronaut"]))
    page.wait_for_function("!document.querySelector('#aligned input').checked"
                           " && document.querySelector('#pasted img') === null", timeout=30_000)

    # a damaged image in the paste box gets its line, as in the upload box (Gradio's decoding failed the request)
    page.locator("#files button[aria-label='Clear']").click()
    page.locator("#pasted input[type=file]").set_input_files(str(photos["broken"]))
    page.wait_for_timeout(1000)
    page.click("#restore")
    page.wait_for_function("document.querySelector('#status').innerText.includes('✗ broken.png')", timeout=120_000)
    assert "0 of 1 file(s) restored" in page.inner_text("#status")

    # a refused request says why in the status (it was a toast that faded, over the previous request's status)
    page.locator("#files input[type=file]").set_input_files(str(photos["astronaut"]))
    page.wait_for_function("document.querySelector('#files').innerText.includes('astronaut')", timeout=60_000)
    page.get_by_text("Advanced (for comparisons and research)").click()  # research settings are folded away
    page.wait_for_timeout(1000)  # its controls are mounted as it opens
    steps = page.get_by_label("steps (empty: the model's)")
    _fill_kept(page, steps, "ddim0")
    page.click("#restore")
    page.wait_for_function("document.querySelector('#status').innerText.includes('Not restored')", timeout=60_000)
    assert "steps" in page.inner_text("#status") and "broken.png" not in page.inner_text("#status")

    # Stop: a long request (250 steps) ends at its next step, and Restore is on again
    _fill_kept(page, steps, "ddim250")
    page.click("#restore")
    page.wait_for_function("!document.querySelector('#stop').disabled", timeout=30_000)
    page.wait_for_timeout(1500)
    page.click("#stop")
    page.wait_for_function("document.querySelector('#status').innerText.includes('Stop button')", timeout=60_000)
    assert "not restored: stopped with the Stop button" in page.inner_text("#status")
    page.wait_for_function("!document.querySelector('#restore').disabled", timeout=30_000)

    # offline: nothing but the server was asked for anything (no CDN fonts or scripts, no analytics)
    hosts = {u.split("/")[2] for u in requests if u.startswith(("http://", "https://", "ws://", "wss://"))}
    assert hosts == {f"127.0.0.1:{server.port}"}, sorted(hosts)
    assert all(u.startswith(("http://127.0.0.1", "data:", "blob:")) for u in requests), [
        u for u in requests if not u.startswith(("http://127.0.0.1", "data:", "blob:"))]
    page.close()



# the words of the table's headers that the browser broke across lines (a word whose letters lie on two lines)
SPLIT_HEADER_WORDS_JS = """() => {
  const split = [];
  for (const th of document.querySelectorAll('#table th')) {
    const walk = document.createTreeWalker(th, NodeFilter.SHOW_TEXT);
    for (let n = walk.nextNode(); n; n = walk.nextNode()) {
      for (const m of n.data.matchAll(/\\S+/g)) {
        const r = document.createRange();
        r.setStart(n, m.index);
        r.setEnd(n, m.index + m[0].length);
        const tops = new Set([...r.getClientRects()].filter(b => b.width > 0).map(b => Math.round(b.top)));
        if (tops.size > 1) split.push(m[0]);
      }
    }
  }
  return split;
}"""


def test_a_keyboard_user_keeps_the_focus_through_a_request(server, browser, photos):
    """Restore pressed with Enter turned itself off and the focus fell to the page (a screen reader said nothing, or
    went back to the top; accessibility audit): it goes to Stop while the request runs, and back to Restore. The
    accordions say whether they are open (aria-expanded), also once opened from the keyboard. The before / after
    divider, mouse-only in Gradio, is a slider the arrow keys, Page Up / Down, Home and End move. A choice in a
    dropdown and an upload keep the focus in their box (Gradio dropped it to the page)."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(server.url)
    page.wait_for_selector("#restore", timeout=60_000)
    page.wait_for_selector("#status-live", state="attached", timeout=30_000)  # the page's own script has run
    within = "(id) => !!document.activeElement?.closest('#' + id)"
    page.locator("#model input").focus()  # a choice in a dropdown blurred it: the focus fell to the page
    page.keyboard.press("ArrowDown")
    page.keyboard.press("Enter")
    page.wait_for_timeout(400)
    assert page.evaluate(within, "model")
    page.keyboard.press("Escape")
    page.locator("#files button").first.focus()  # an upload drew the box anew: the focus fell to the page
    for attempt in range(3):  # an Enter soon after the focus or a change opened no file chooser at times (Gradio's,
        try:                  # without this page's script too; under load in 1 run of 4)
            with page.expect_file_chooser(timeout=10_000) as chooser:
                page.keyboard.press("Enter")
            break
        except PlaywrightTimeout:
            if attempt == 2:
                raise
            page.locator("#files button").first.focus()
    chooser.value.set_files(str(photos["astronaut"]))
    page.wait_for_function("document.querySelector('#files').innerText.includes('astronaut')", timeout=60_000)
    page.wait_for_function(f"({within})('files')", timeout=5_000)
    expanded = "() => [...document.querySelectorAll('.label-wrap')].map(h => h.getAttribute('aria-expanded'))"
    page.wait_for_function(f"({expanded})().join() === 'true,false'", timeout=10_000)  # Settings open, Advanced not
    page.locator(".label-wrap", has_text="Advanced").focus()
    page.keyboard.press("Enter")  # opened from the keyboard, and said so
    page.wait_for_function(f"({expanded})().join() === 'true,true'", timeout=10_000)
    page.focus("#restore")
    page.keyboard.press("Enter")
    page.wait_for_function("document.activeElement?.id === 'stop'", timeout=30_000)
    page.wait_for_function("document.querySelector('#status').innerText.includes('file(s) restored')", timeout=300_000)
    page.wait_for_function("document.activeElement?.id === 'restore'", timeout=30_000)
    # the before / after divider, which only a mouse could move: a focusable slider that the keys move
    divider = page.locator("#slider [data-testid=slider][role=slider]")
    divider.wait_for(timeout=20_000)
    clip = "document.querySelectorAll('#slider img')[1].style.clipPath"
    assert divider.get_attribute("tabindex") == "0" and divider.get_attribute("aria-valuenow") == "50"
    assert page.evaluate(clip) == "inset(0px 0px 0px 50%)"
    divider.focus()
    for key, value in (("ArrowLeft", 45), ("ArrowLeft", 40), ("PageUp", 65), ("Home", 0), ("End", 100)):
        page.keyboard.press(key)
        page.wait_for_function(f"document.querySelector('#slider [role=slider]').getAttribute('aria-valuenow') === "
                               f"'{value}'", timeout=5_000)
        if key == "ArrowLeft":
            shown = float(re.search(r"([\d.]+)%", page.evaluate(clip)).group(1))
            assert shown < 50  # the picture itself follows: less of it is the input
    assert divider.get_attribute("aria-valuetext") == "100 % input, 0 % restoration"
    assert page.evaluate("document.activeElement.getAttribute('role')") == "slider"  # the focus stays on it
    page.close()


def test_the_table_is_readable_at_phone_width(server, browser, tmp_path):
    """At 390 px the per-face table's headers read "fa|ce", "NF|E", "s/fac|e" (Gradio's wrapping cells break
    anywhere): now they wrap at word boundaries only and the table scrolls sideways, not the page."""
    page = browser.new_page(viewport={"width": 390, "height": 844})
    page.goto(server.url)
    page.wait_for_selector("#restore", timeout=60_000)
    page.locator("#samples button.gallery-item").nth(1).click()
    page.wait_for_function("document.querySelector('#pasted img') !== null", timeout=30_000)
    page.click("#restore")
    page.wait_for_function("document.querySelector('#status').innerText.includes('file(s) restored')", timeout=300_000)
    page.wait_for_function("document.querySelectorAll('#table td').length >= 7", timeout=30_000)
    page.wait_for_timeout(500)  # the table sizes its columns after a frame
    page.locator("#table").screenshot(path=str(tmp_path / "table_390.png"))
    headers = page.eval_on_selector_all("#table th", "els => els.map(e => e.innerText.trim())")
    assert "std*" in headers and "s/face" in headers, headers
    assert page.evaluate(SPLIT_HEADER_WORDS_JS) == []
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # the table scrolls, not the page
    page.close()


def test_restore_a_video_in_the_browser(server, browser, tmp_path):
    """A video uploaded with a part given: restored, its frame with the most faces in the slider beside the input's,
    and the restored video in the page's player, which the browser decodes and plays (H.264 in MP4)."""
    from test_video import make_video

    base = data.astronaut()[0:240, 100:420]
    frames = [np.ascontiguousarray(np.roll(base, 3 * i, axis=1)) for i in range(6)]
    clip = make_video(tmp_path / "clip.mp4", frames, audio_s=0.75)
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.goto(server.url)
    page.wait_for_selector("#restore", timeout=60_000)
    assert not page.locator("#video video").count()  # no player before a video is restored
    _fill_kept(page, page.locator("#clip textarea, #clip input").first, "0-0.5")
    status = _upload_and_restore(page, clip, "file(s) restored")
    assert "1 of 1 file(s) restored" in status and "clip.mp4: video restored, 4 frame(s), 4 face(s) in 4 of them" in status
    assert page.input_value("#compare input").startswith("clip: frame 1 of 4")
    page.wait_for_function(
        "[...document.querySelectorAll('#slider img')].filter(i => i.complete && i.naturalWidth > 0).length >= 2",
        timeout=60_000)
    sizes = page.eval_on_selector_all("#slider img", "els => els.map(e => [e.naturalWidth, e.naturalHeight])")
    assert sizes and all(s == [640, 480] for s in sizes), sizes  # frames of the video upscaled x2
    page.wait_for_function("(() => { const v = document.querySelector('#video video');"
                           " return v && v.readyState >= 2 && v.videoWidth > 0; })()", timeout=60_000)
    w, h, dur = page.eval_on_selector("#video video", "v => [v.videoWidth, v.videoHeight, v.duration]")
    assert (w, h) == (640, 480) and abs(dur - 0.5) < 0.1, (w, h, dur)
    page.eval_on_selector("#video video", "v => { v.muted = true; return v.play(); }")
    page.wait_for_function("document.querySelector('#video video').currentTime > 0", timeout=30_000)
    assert "restored video: clip.mp4" in page.inner_text("#video")
    page.close()


def test_out_of_range_api_values_get_a_reason_and_one_log_line(server, photos):
    """Out-of-range values through the API: the client is told which setting and why, and the server's log gets
    one line per refused request, no traceback (Gradio's own range checks printed one per request)."""
    from gradio_client import Client, handle_file

    client = Client(server.url, verbose=False)
    start = server.log.stat().st_size
    cases = {"fidelity": (5, "fidelity must be a number in [0, 1]"), "seed": (-1, "seed must be a whole number"),
             "steps": ("-1", "unusable steps '-1'"), "mode": ("bogus", "unknown mode 'bogus'")}
    for key, (value, msg) in cases.items():
        with pytest.raises(Exception, match=re.escape(msg)):
            client.predict(files=[handle_file(str(photos["astronaut"]))], model="embedded-64", api_name="/restore",
                           **{key: value})
    with open(server.log, "rb") as fh:  # printed before the error went to the client
        fh.seek(start)
        log = fh.read().decode(errors="replace")
    refused = [ln for ln in log.splitlines() if "refused a request" in ln]
    assert len(refused) == len(cases) and all(msg in ln for ln, (_, msg) in zip(refused, cases.values(), strict=True)), log
    assert "Traceback" not in log and "gradio.exceptions" not in log, log


def _other_addresses() -> list[str]:
    """This machine's addresses other than 127.0.0.1: 127.0.0.2 (loopback, but not the bound address), ::1, and
    every interface's IPv4 address (Linux SIOCGIFADDR)."""
    addrs = {"127.0.0.2"}
    if socket.has_ipv6:
        addrs.add("::1")
    try:
        import fcntl
        import struct

        for _, name in socket.if_nameindex():
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                try:
                    packed = fcntl.ioctl(s.fileno(), 0x8915, struct.pack("256s", name[:15].encode()))
                except OSError:
                    continue
                addrs.add(socket.inet_ntoa(packed[20:24]))
    except (ImportError, OSError):
        pass
    addrs.discard("127.0.0.1")
    return sorted(addrs)


def test_a_server_on_localhost_is_not_reachable_on_other_addresses(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=5):
        pass  # the control: it is listening
    others = _other_addresses()
    assert "127.0.0.2" in others
    for addr in others:
        fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
        with socket.socket(fam, socket.SOCK_STREAM) as s:
            s.settimeout(3)
            try:
                s.connect((addr, server.port))
            except OSError:
                continue  # refused (or no route): not reachable
            pytest.fail(f"the server bound to 127.0.0.1 answered on {addr}:{server.port}")


def test_restore_through_the_api(server, photos, tmp_path):
    from gradio_client import Client, handle_file

    client = Client(server.url, download_files=str(tmp_path), verbose=False)
    # as in the README
    status, compare, slider, gallery, maps, table, zpath = client.predict(
        files=[handle_file(str(photos["astronaut"]))], model="embedded-64", fidelity=0.5, seed=1, api_name="/restore")
    assert "1 of 1 file(s) restored" in status
    assert table["data"][0][0] == "astronaut.png"
    assert "records/astronaut.json" in zipfile.ZipFile(zpath).namelist()
    assert len(maps) == 5 and len(gallery) == 1 and len(slider) == 2
    with pytest.raises(Exception, match="refused|not one this server offers|not in the list"):
        client.predict(files=[handle_file(str(photos["astronaut"]))], model="/etc/passwd", api_name="/restore")


def _http_call(base: str, data: list) -> str:
    """Plain HTTP: POST /gradio_api/call/restore, then read the event stream; returns its text."""
    req = urllib.request.Request(base + "gradio_api/call/restore", data=json.dumps({"data": data}).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        event = json.load(r)["event_id"]
    with urllib.request.urlopen(base + f"gradio_api/call/restore/{event}", timeout=300) as r:
        return r.read().decode()


def _http_upload(base: str, path: Path) -> str:
    """Plain HTTP: POST the file to /gradio_api/upload (multipart, field ``files``); returns its path on the server."""
    boundary = "dynfaceboundary7"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{path.name}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n").encode() + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(base + "gradio_api/upload", data=body,
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(req, timeout=60) as r:
        (uploaded,) = json.load(r)
    return uploaded


def test_plain_http_needs_only_the_files_and_malformed_calls_get_one_line(server, photos):
    """As the API page says, only ``files`` is needed, for a plain HTTP client (curl) too: Gradio refused a call
    with fewer than its 16 parameters, told the client the Python reprs of its components and printed a traceback.
    A parameter Gradio cannot read is refused with one line naming it; the server's log has no traceback."""
    start = server.log.stat().st_size
    uploaded = _http_upload(server.url, photos["astronaut"])
    answer = _http_call(server.url, [[{"path": uploaded, "meta": {"_type": "gradio.FileData"}}]])
    assert "event: complete" in answer and "1 of 1 file(s) restored" in answer, answer[:2000]
    bad = {"a string for files": (["astronaut.png"], "the parameter 'files' cannot be read"),
           "a file without its path": ([[{"url": "http://example.com/a.png"}]], "the parameter 'files' cannot be read"),
           "text for the pasted image": ([None, "hello"], "the parameter 'pasted' cannot be read")}
    for what, (args, msg) in bad.items():
        answer = _http_call(server.url, args)
        assert "event: error" in answer and msg in answer, (what, answer)
        assert "gradio.components" not in answer
    with open(server.log, "rb") as fh:
        fh.seek(start)
        log = fh.read().decode(errors="replace")
    assert "Traceback" not in log and sum("cannot be read" in ln for ln in log.splitlines()) == len(bad), log


def test_plain_http_cannot_name_a_server_path_or_fetch_server_files(server):
    answer = _http_call(server.url, [[{"path": "/etc/hostname", "meta": {"_type": "gradio.FileData"}}]])
    assert "event: error" in answer and "complete" not in answer
    assert "a file in 'files' was not uploaded to this server" in answer
    weights = ROOT / "src" / "dynface" / "weights" / "embedded-64" / "prior.safetensors"
    for path in ("/etc/passwd", str(weights)):
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(server.url + f"gradio_api/file={path}", timeout=10)
        assert e.value.code in (403, 404)
