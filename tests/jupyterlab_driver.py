"""Driving JupyterLab in headless Chromium, as a person would: start a server, open a notebook,
use its menus, read what the page shows.

Used by tests/test_browser.py and benchmarks/check_jupyterlab_run_all.py. It drives Chromium with
Playwright for Python: the system's (NBUTILS_CHROMIUM, else ``chromium`` on PATH or
/usr/bin/chromium, Debian's package) where there is one, else Playwright's own download
(``python -m playwright install chromium``). Not a test file itself (no ``test_`` prefix).

As a script it is what ``make browser`` (part of ``make setup``) and ``make test`` run:
``python tests/jupyterlab_driver.py install`` installs a browser the way that works for this user
(as root with apt-get: Debian's chromium and fonts-noto-cjk; otherwise Playwright's Chromium), and
``python tests/jupyterlab_driver.py check`` starts the browser once and, where it cannot, prints
one line saying what is missing and the command that installs it (exit status 2).
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

SYSTEM_CHROMIUM = "/usr/bin/chromium"  # Debian's chromium package
APT_PACKAGES = ("chromium", "fonts-noto-cjk")  # the browser, and a font for the Chinese headlines
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-default-apps"]
POLL_S = 0.1  # how often the page is looked at while waiting (reading the DOM costs little)


def system_chromium() -> str | None:
    """The Chromium binary to drive: NBUTILS_CHROMIUM as given (even if missing: the user named
    it), else ``chromium`` on PATH or Debian's /usr/bin/chromium; None: use Playwright's own."""
    named = os.environ.get("NBUTILS_CHROMIUM", "").strip()
    if named:
        return named
    found = shutil.which("chromium")
    if found:
        return found
    return SYSTEM_CHROMIUM if os.access(SYSTEM_CHROMIUM, os.X_OK) else None


def _apt_usable() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get") is not None


def install_command() -> str:
    """The command that installs a browser for this user (``make browser`` runs it)."""
    if _apt_usable():
        return f"apt-get update && apt-get install -y {' '.join(APT_PACKAGES)}"
    return "python -m playwright install chromium"


def missing_browser() -> str | None:
    """Why the browser cannot be driven here, in one line with the command that fixes it, or None.
    Looks at files only (cheap); :func:`browser_problem` also starts the browser."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed: install it with  pip install -e '.[dev]'  (or make setup)"
    path = system_chromium()
    if path is not None:
        if not (Path(path).is_file() and os.access(path, os.X_OK)):
            return (f"NBUTILS_CHROMIUM={path} is not an executable file: point it at a Chromium binary, "
                    f"or unset it and install one with  {install_command()}  (or make browser)")
        return None
    if not _playwright_chromium_installed():
        return (f"no Chromium: none on PATH or at {SYSTEM_CHROMIUM}, and Playwright's own is not installed: "
                f"install one with  {install_command()}  (or make browser)")
    return None


def _playwright_chromium_installed() -> bool:
    """Whether ``python -m playwright install chromium`` has put its browser in place (dry run:
    lists the install folders without downloading)."""
    listed = subprocess.run([sys.executable, "-m", "playwright", "install", "--dry-run", "chromium"],
                            capture_output=True, text=True, timeout=60)
    folders = re.findall(r"Install location:\s*(\S+)", listed.stdout)
    return bool(folders) and all(Path(folder).is_dir() for folder in folders)


def browser_problem() -> str | None:
    """:func:`missing_browser`, then start the browser once headless: None where it runs."""
    problem = missing_browser()
    if problem:
        return problem
    from playwright.sync_api import Error, sync_playwright

    try:
        with sync_playwright() as p:
            p.chromium.launch(executable_path=system_chromium(), headless=True, args=CHROMIUM_ARGS).close()
    except Error as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        which = system_chromium() or "Playwright's Chromium"
        fix = ("python -m playwright install-deps chromium  (as root: the libraries it needs)"
               if system_chromium() is None else install_command())
        return f"{which} does not start ({first}): fix it with  {fix}"
    return None


@dataclass
class Phases:
    """Wall time per named phase: where a browser check spends its time."""

    rows: list[tuple[str, float]] = field(default_factory=list)

    @contextmanager
    def __call__(self, name: str):
        start = time.monotonic()
        try:
            yield
        finally:
            self.rows.append((name, time.monotonic() - start))

    def table(self) -> str:
        total = sum(s for _, s in self.rows)
        lines = [f"{name:<44} {seconds:7.1f} s" for name, seconds in self.rows]
        return "\n".join([*lines, f"{'total':<44} {total:7.1f} s"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Lab:
    proc: subprocess.Popen
    log: object
    log_path: Path
    url: str
    token: str

    def stop(self) -> None:
        """Stop this JupyterLab (its process group: the server and its kernels)."""
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=2)  # a graceful stop if quick; nothing here needs saving: then SIGKILL
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=10)
        finally:
            self.log.close()

    def wait_ready(self, timeout_s: float = 120) -> None:
        """Until the server answers on its port (or fail with the end of its log)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.log.close()
                raise AssertionError(f"JupyterLab exited with {self.proc.returncode}: "
                                     + self.log_path.read_text(errors="replace")[-2000:])
            try:
                with urllib.request.urlopen(f"{self.url}/api/status?token={self.token}", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise AssertionError(f"JupyterLab did not answer within {timeout_s:.0f} s")


def start_jupyterlab(root: Path, home: Path, env: dict | None = None, wait: bool = True,
                     timeout_s: float = 120) -> Lab:
    """A JupyterLab of its own on 127.0.0.1 (free port, random token), serving ``root``.

    ``env``: the server's (and its kernels') environment; default: this one with OMP_NUM_THREADS=1.
    ``wait=False`` returns at once (do other work while it starts, then ``lab.wait_ready()``).
    """
    home.mkdir(parents=True, exist_ok=True)
    # A fresh user: start the notebook's kernel without asking, and no "Jupyter news?" toast.
    for plugin, settings in (("notebook-extension/tracker", '{"autoStartDefaultKernel": true}'),
                             ("apputils-extension/notification", '{"fetchNews": "false"}')):
        path = home / "settings" / "@jupyterlab" / f"{plugin}.jupyterlab-settings"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(settings, encoding="utf-8")
    port, token = _free_port(), secrets.token_hex(16)
    env = {**({**os.environ, "OMP_NUM_THREADS": "1"} if env is None else env), "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
           "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"), "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces")}
    command = [sys.executable, "-m", "jupyter", "lab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
               f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
               "--ServerApp.terminals_enabled=False"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")
    log_path = home / "jupyterlab.log"
    log = open(log_path, "wb")  # noqa: SIM115 - closed by Lab.stop
    proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    lab = Lab(proc, log, log_path, f"http://127.0.0.1:{port}", token)
    if wait:
        lab.wait_ready(timeout_s)
    return lab


def launch_chromium(playwright, profile_dir: Path):
    """Headless Chromium (the system's where there is one, else Playwright's) with its own profile."""
    return playwright.chromium.launch_persistent_context(
        str(profile_dir), executable_path=system_chromium(), headless=True, args=CHROMIUM_ARGS,
        viewport={"width": 1280, "height": 900})


def open_notebook(page, lab: Lab, name: str, workspace: str = "", timeout_ms: float = 120_000,
                  wait: bool = True) -> None:
    """Open ``name`` and wait until its kernel is up (status bar: "Python 3 | Idle").

    ``workspace``: a JupyterLab workspace of that name, which shows this notebook alone (the
    default workspace also restores the notebooks opened before). ``wait=False`` returns once
    the page has loaded, while the kernel starts (then :func:`wait_for_kernel`).
    """
    prefix = f"/lab/workspaces/{workspace}" if workspace else "/lab"
    page.goto(f"{lab.url}{prefix}/tree/{name}?token={lab.token}")
    if wait:
        wait_for_kernel(page, timeout_ms)


def wait_for_kernel(page, timeout_ms: float = 120_000) -> None:
    page.locator(".jp-Notebook .jp-CodeCell").first.wait_for(timeout=timeout_ms)
    # Run All before the kernel is connected is lost: wait until the status bar names it, Idle.
    page.locator(".jp-StatusBar-TextItem", has_text=re.compile(r"Python 3.*Idle")).wait_for(timeout=timeout_ms)


def dirty_tabs(page) -> list[str]:
    """Names of the open documents JupyterLab marks as changed (closing them would ask to save)."""
    return [t.strip() for t in page.locator(".lm-TabBar-tab.jp-mod-dirty").all_text_contents()]


def menu(page, top: str, item: str) -> None:
    """Click ``top`` in the menu bar, then ``item`` in its menu (exact labels)."""
    page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(rf"^{re.escape(top)}$")).click()
    page.locator(".lm-Menu-itemLabel", has_text=re.compile(rf"^{re.escape(item)}$")).click()


def run_all(page) -> None:
    menu(page, "Run", "Run All Cells")


def interrupt_kernel(page) -> None:
    menu(page, "Kernel", "Interrupt Kernel")


def prompts(page) -> list[str]:
    # text_content, not inner_text: cells scrolled out of view are not rendered but are in the DOM
    return [p.strip() for p in page.locator(".jp-CodeCell .jp-InputPrompt").all_text_contents()]


def wait_until_done(page, previous_last_prompt: str, timeout_s: float) -> str:
    """Every queued cell has run: no `[*]` prompt, and the last cell's count has moved on."""
    deadline = time.monotonic() + timeout_s
    last = ""
    while time.monotonic() < deadline:
        shown = prompts(page)
        last = shown[-1] if shown else ""
        if shown and not any("*" in p for p in shown) and last not in (previous_last_prompt, "[ ]:"):
            return last
        time.sleep(POLL_S)
    raise AssertionError(f"the notebook did not finish within {timeout_s:.0f} s (last prompt {last!r}; "
                         f"errors shown: {errors(page)})")


def wait_until_idle(page, timeout_s: float) -> None:
    """No cell is running or queued any more (after an interrupt the rest of the queue is dropped)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not any("*" in p for p in prompts(page)):
            return
        time.sleep(POLL_S)
    raise AssertionError(f"cells still running {timeout_s:.0f} s after the interrupt")


def outputs(page) -> list[str]:
    return page.locator(".jp-OutputArea-output").all_text_contents()


def errors(page) -> list[str]:
    """Error outputs on the page (an exception's traceback), long ones cut in the middle so the
    first frames and the exception's own line (at the end) stay."""
    return [t if len(t) <= 800 else f"{t[:400]} [...] {t[-400:]}" for t in outputs(page) if "Traceback" in t]


def install() -> int:
    """Install a browser unless one runs already: Debian's chromium and fonts-noto-cjk as root with
    apt-get, else Playwright's Chromium (no root needed). Says what it did; 1 where none runs after."""
    if browser_problem() is None:
        print(f"browser: {system_chromium() or 'Playwright Chromium'} starts; nothing to install")
        return 0
    missing = missing_browser()
    if missing and missing.startswith("Playwright for Python"):
        print(f"browser: {missing}")
        return 1
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if _apt_usable() and "NBUTILS_CHROMIUM" not in os.environ:
        print(f"browser: {install_command()}", flush=True)
        if subprocess.run(["apt-get", "update", "-qq"], env=env).returncode == 0:
            subprocess.run(["apt-get", "install", "-y", "-qq", *APT_PACKAGES], env=env)
    if browser_problem() is not None and system_chromium() is None:
        print("browser: python -m playwright install chromium", flush=True)
        subprocess.run([sys.executable, "-m", "playwright", "install", "chromium"])
    problem = browser_problem()
    print(f"browser: {problem}" if problem else f"browser: {system_chromium() or 'Playwright Chromium'} starts")
    return 1 if problem else 0


def notebook_screenshot(notebook: Path, out_png: Path, *, scroll_to: str = "metrics = stage.train(") -> Path:
    """A screenshot of an executed notebook as JupyterLab shows it (its saved outputs; nothing is
    run), scrolled to the cell whose code contains ``scroll_to``: the README's picture of a run's
    notebook 04. The notebook is copied to a temporary folder first, so JupyterLab leaves nothing
    (checkpoints, workspaces) in the run directory; the PNG is written atomically."""
    import shutil
    import tempfile

    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="nbutils-screenshot-") as tmp:
        tmp = Path(tmp)
        (tmp / "lab").mkdir()
        shutil.copyfile(notebook, tmp / "lab" / Path(notebook).name)
        lab = start_jupyterlab(tmp / "lab", tmp / "home")
        try:
            with sync_playwright() as p:
                browser = launch_chromium(p, tmp / "chromium")
                try:
                    page = browser.new_page()
                    page.set_viewport_size({"width": 1280, "height": 900})
                    open_notebook(page, lab, Path(notebook).name, workspace="screenshot", wait=False)
                    cell = page.locator(".jp-CodeCell").filter(has_text=scroll_to).first
                    cell.wait_for(timeout=120_000)
                    page.keyboard.press("Escape")  # command mode: no cursor blinking in a cell
                    cell.locator(".jp-OutputArea-output img").first.scroll_into_view_if_needed()
                    page.mouse.wheel(0, 200)
                    time.sleep(1)  # the scroll settles and images paint
                    staged = tmp / "shot.png"
                    page.screenshot(path=str(staged))
                finally:
                    browser.close()
        finally:
            lab.stop()
        Path(out_png).parent.mkdir(parents=True, exist_ok=True)
        partial = Path(out_png).with_name(f".{Path(out_png).name}.tmp")
        from PIL import Image

        with Image.open(staged) as image:  # 128 colours: a screenshot of text and line plots, a fifth of the bytes
            image.convert("RGB").quantize(128).save(partial, format="PNG", optimize=True)
        os.replace(partial, out_png)
    return Path(out_png)


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="The browser for tests/test_browser.py: check it starts, or install "
                                                 "one; or take the README's screenshot of a run's notebook 04.")
    parser.add_argument("action", choices=("check", "install", "screenshot"))
    parser.add_argument("run", nargs="?", help="screenshot: the run directory (its notebooks/04_finetune.ipynb)")
    parser.add_argument("--out", default="figures/jupyterlab.png", help="screenshot: the PNG to write")
    args = parser.parse_args(argv)
    if args.action == "install":
        return install()
    problem = browser_problem()
    if problem:
        print(f"make test needs a browser for tests/test_browser.py (JupyterLab): {problem}", file=sys.stderr)
        return 2
    if args.action == "screenshot":
        notebook = Path(args.run or "") / "notebooks" / "04_finetune.ipynb"
        if not args.run or not notebook.is_file():
            print(f"no executed notebook 04 at {notebook}: pass a finished run, e.g. runs/<run>", file=sys.stderr)
            return 2
        print(f"wrote {notebook_screenshot(notebook, Path(args.out))}")
    return 0


# What report.html must show in its first screen: the verdict block (notebook 06's opening).
FIRST_SCREEN = {"width": 1280, "height": 800}
_LAYOUT_JS = """() => {
  const doc = document.documentElement;
  const find = (text) => [...document.querySelectorAll('p, strong, h1')].find(e => e.textContent.includes(text));
  const box = (e) => e ? e.getBoundingClientRect().bottom + window.scrollY : null;
  // elements wider than the page, or wider than the box they sit in without a scroll bar of their own
  const wide = [...document.querySelectorAll('table, pre, img, p')].filter(e => {
    const r = e.getBoundingClientRect();
    if (r.right <= doc.clientWidth + 1) return false;
    let p = e.parentElement;
    while (p && p !== document.body) {
      const s = getComputedStyle(p);
      if ((s.overflowX === 'auto' || s.overflowX === 'scroll') && p.getBoundingClientRect().right <= doc.clientWidth + 1) return false;
      p = p.parentElement;
    }
    return true;
  }).map(e => e.tagName + ': ' + e.textContent.slice(0, 60));
  return {
    title_bottom: box(document.querySelector('h1')),
    verdict_bottom: box(find('Verdict:') || find('What was run:')),
    table_bottom: box(document.querySelector('.jp-RenderedMarkdown table')),
    scroll_width: doc.scrollWidth, client_width: doc.clientWidth, page_height: doc.scrollHeight,
    wide: wide,
    images: document.images.length,
    no_alt: [...document.images].filter(i => !(i.alt || '').trim() || /no description/i.test(i.alt)).length,
    alts: [...document.images].map(i => i.alt),
  };
}"""


def report_layout(browser, html: Path, screenshot: Path | None = None) -> dict:
    """Open a report.html (a file) at FIRST_SCREEN's size and measure where the verdict ends,
    whether anything is wider than the page, and which images lack alt text."""
    page = browser.new_page()
    try:
        page.set_viewport_size(FIRST_SCREEN)
        page.goto(Path(html).resolve().as_uri())
        page.wait_for_load_state("load")
        if screenshot:
            page.screenshot(path=str(screenshot))
        return page.evaluate(_LAYOUT_JS)
    finally:
        page.close()


if __name__ == "__main__":
    sys.exit(main())
