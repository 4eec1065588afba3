"""The web app at ``/``: its files and headers, then the page itself in Chromium (Playwright).

The browser tests (marked ``web``) drive Debian's ``/usr/bin/chromium`` against a real uvicorn
server on 127.0.0.1 with a user who signs in with a password. With ``SORAKIT_SCREENSHOTS=1`` they
also save the README's screenshots to ``docs/``.
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from PIL import Image
from typer.testing import CliRunner

from sorakit.cli.main import app as cli
from sorakit.client.embedded import EmbeddedServer
from sorakit.config import load_settings
from sorakit.media.encode import probe
from sorakit.server import auth
from sorakit.server.routes_web import content_security_policy
from test_seed_clients import COOKIE, LIVE_HOST, client_env, fill_in, seed_path, seed_python_script

try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:  # the test extra brings it; without it only the browser tests skip
    sync_playwright = None

CHROMIUM = "/usr/bin/chromium"
# read at import: the autouse fixture of conftest.py clears SORAKIT_* variables for each test
SCREENSHOTS = os.environ.get("SORAKIT_SCREENSHOTS") == "1"
DOCS = Path(__file__).resolve().parents[1] / "docs"
USER, PASSWORD = "ada", "correct horse battery"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
XSS = "<img src=x onerror=alert(1)> a kite <script>alert(2)</script>"
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
       "media-src 'self' blob:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
       "frame-ancestors 'none'; form-action 'self'")

web = pytest.mark.web


# -- the files and their headers (no browser) ------------------------------------------------------


@pytest.fixture
def api(make_api):
    return make_api(workers=0)


def test_page_is_served_with_strict_headers(api):
    page = api.client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["content-security-policy"] == CSP
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "same-origin"
    assert page.headers["cache-control"] == "no-cache"
    # no inline script or style anywhere: the policy would block it, so the page must not need it
    assert not re.search(r"<script(?![^>]*\bsrc=)", page.text)
    assert "<style" not in page.text and " style=" not in page.text


@pytest.mark.parametrize("name, media_type", [
    ("app.js", "text/javascript; charset=utf-8"), ("api.js", "text/javascript; charset=utf-8"),
    ("app.css", "text/css; charset=utf-8"), ("icon.svg", "image/svg+xml")])
def test_static_files_have_their_media_types_and_a_short_cache(api, name, media_type):
    reply = api.client.get(f"/static/{name}")
    assert reply.status_code == 200
    assert reply.headers["content-type"] == media_type
    assert reply.headers["cache-control"] == "public, max-age=300"
    assert reply.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize("name", ["nope.js", "..%2Fapp.py", "%2E%2E%2F__init__.py", ".hidden.js",
                                  "index.py", "APP.JS"])
def test_static_serves_only_its_own_files(api, name):
    reply = api.client.get(f"/static/{name}")
    assert reply.status_code == 404
    assert reply.json()["error"]["code"] == "not_found"


def test_every_module_the_page_imports_is_served(api):
    script = api.client.get("/static/app.js").text
    for name in re.findall(r"from '\./([\w-]+\.js)'", script):
        assert api.client.get(f"/static/{name}").status_code == 200, name


def test_web_routes_stay_out_of_the_api_document(api):
    paths = api.client.get("/openapi.json").json()["paths"]
    assert "/" not in paths and "/static/{name}" not in paths


def test_signed_links_on_another_origin_are_allowed_as_media():
    policy = content_security_policy("https://videos.example.org/base/")
    assert "img-src 'self' https://videos.example.org data: blob:" in policy
    assert "media-src 'self' https://videos.example.org blob:" in policy
    assert "connect-src 'self';" in policy  # only media: the API stays on the page's origin


# -- a server, a user with a password, a browser -----------------------------------------------------


def add_user(data_dir: Path, name: str, password: str, *extra: str) -> None:
    done = CliRunner().invoke(cli, ["users", "add", name, "--password-stdin", "--data-dir", str(data_dir),
                                    *extra], input=password + "\n")
    assert done.exit_code == 0, done.output


class WebServer:
    """A real uvicorn server on 127.0.0.1 over a temp data dir (the embedded server's)."""

    def __init__(self, data_dir: Path) -> None:
        # paced so that a poll every 2-3 s sees a video being made; 2 workers for 2 cores
        settings = load_settings({"data_dir": data_dir, "workers": 2, "preview_pace": 5,
                                  "default_concurrency": 10, "blocked_terms": ["forbidden"]}, env={})
        self.embedded = EmbeddedServer(settings).start()
        self.url = self.embedded.url
        self.services = self.embedded.services
        self.data_dir = data_dir

    def token(self, name: str = USER) -> str:
        store = self.services.store
        return auth.issue(store, self.services.jwt_key, store.user_by_name(name)["id"], 3600)[0]

    def call(self, token: str, method: str, path: str, **kwargs) -> requests.Response:
        return requests.request(method, self.url + path, headers={"Authorization": f"Bearer {token}"},
                                timeout=30, **kwargs)

    def make_videos(self, *bodies: dict) -> list[dict]:
        """Finished drafts, made through the API (the page's own create is tested on its own)."""
        token = self.token()
        ids = [self.call(token, "POST", "/backend/nf/create", json={"n_frames": 150, **body}).json()["id"]
               for body in bodies]
        return [self._finished(token, task_id) for task_id in ids]

    def make_video(self, prompt: str, orientation: str = "landscape") -> dict:
        return self.make_videos({"prompt": prompt, "orientation": orientation})[0]

    def _finished(self, token: str, task_id: str) -> dict:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            task = self.call(token, "GET", f"/backend/nf/tasks/{task_id}/v2").json()
            if task["status"] in ("succeeded", "failed", "cancelled"):
                assert task["status"] == "succeeded", task
                return task["generations"][0]
            time.sleep(0.3)
        raise AssertionError(f"{task_id} did not finish")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = WebServer(tmp_path_factory.mktemp("web"))
    add_user(srv.data_dir, USER, PASSWORD)
    yield srv
    srv.embedded.stop()


@pytest.fixture(scope="module")
def browser():
    if sync_playwright is None:
        pytest.skip("playwright is not installed (pip install -e '.[test]')")
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium); Playwright's own browsers "
                    "are not used")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield chromium
        chromium.close()


class Page:
    """A fresh browser context and page that records what a test must not see: script errors,
    dialogs, Content-Security-Policy violations, and the Authorization headers it sent."""

    def __init__(self, browser, **options) -> None:
        options.setdefault("viewport", DESKTOP)
        self.context = browser.new_context(accept_downloads=True, **options)
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.requests: list = []
        self.page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        self.page.on("console", self._console)
        self.page.on("dialog", self._dialog)
        self.page.on("request", lambda request: self.requests.append(request))

    def _console(self, message) -> None:
        if "Content Security Policy" in message.text:
            self.errors.append(f"CSP: {message.text}")

    def _dialog(self, dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def bearer_tokens(self) -> list[str]:
        found = (r.header_value("authorization") for r in self.requests if "/backend/" in r.url)
        return [value.removeprefix("Bearer ") for value in found if value]

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def web_page(browser):
    page = Page(browser)
    yield page
    page.close()
    assert page.errors == []
    assert page.dialogs == []


def sign_in(page, server: WebServer, user: str = USER, password: str = PASSWORD) -> None:
    page.goto(server.url + "/")
    page.get_by_label("Username").fill(user)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()


def snapshot(page, name: str) -> None:
    """A README screenshot, under 300 KB: in full colour where that fits, else in 256 colours."""
    if not SCREENSHOTS:
        return
    DOCS.mkdir(exist_ok=True)
    path = DOCS / name
    shot = Image.open(io.BytesIO(page.screenshot(animations="disabled", caret="initial"))).convert("RGB")
    shot.save(path, optimize=True)
    if path.stat().st_size >= 300_000:
        shot.quantize(256, method=Image.Quantize.FASTOCTREE).save(path, optimize=True)
    assert path.stat().st_size < 300_000, name


def wait_until(page, condition, timeout: float = 30.0) -> None:
    # Not page.wait_for_function: it evaluates a string, which the page's CSP (rightly) refuses.
    # Waiting through the page also lets Playwright deliver its events (a time.sleep would not).
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        page.wait_for_timeout(100)


def library_card(page, prompt: str):
    return page.locator("li.draft").filter(has=page.locator(".prompt", has_text=prompt))


# -- sign-in and sign-out ------------------------------------------------------------------------


@web
def test_sign_in_shows_the_app_with_the_users_name(web_page, server):
    page = web_page.page
    page.goto(server.url + "/")
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.get_by_role("button", name="Sign out")).to_be_hidden()
    snapshot(page, "web-signin.png")

    sign_in(page, server)
    expect(page.locator("#user-name")).to_have_text(USER)
    expect(page.get_by_label("Prompt")).to_be_visible()
    expect(page.locator("[data-quota]").first).to_contain_text("videos left today")
    expect(page.locator("#model option").first).to_have_attribute("value", "sy_8")
    names = [c["name"] for c in web_page.context.cookies()]
    assert any(name.endswith("next-auth.session-token") for name in names), names

    page.reload()  # the cookie carries the session across a reload; the token was in memory only
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    tokens = web_page.bearer_tokens()
    assert tokens and all(token not in r.url for r in web_page.requests for token in tokens)


@web
def test_wrong_password_shows_an_error_and_sets_no_cookie(web_page, server):
    page = web_page.page
    page.goto(server.url + "/")
    page.get_by_label("Username").fill(USER)
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("alert")).to_have_text("Wrong username or password.")
    expect(page.get_by_role("button", name="Sign out")).to_be_hidden()
    assert web_page.context.cookies() == []


@web
def test_too_many_attempts_say_when_to_try_again(web_page, server):
    add_user(server.data_dir, "grace", PASSWORD)
    page = web_page.page
    page.goto(server.url + "/")
    page.get_by_label("Username").fill("grace")
    alert = page.get_by_role("alert")
    for attempt in range(12):
        page.get_by_label("Password").fill(f"wrong guess {attempt}")
        page.get_by_role("button", name="Sign in").click()
        expect(alert).not_to_have_text("")
        if "Too many attempts" in alert.text_content():
            break
    expect(alert).to_have_text(re.compile(r"Too many attempts\. Try again in \d+ (s|min) \(at \d\d:\d\d"))


@web
def test_sign_out_ends_the_session_and_its_token(web_page, server):
    page = web_page.page
    sign_in(page, server)
    expect(page.locator("[data-quota]").first).not_to_be_empty()  # a /backend call was made
    cookies = {c["name"]: c["value"] for c in web_page.context.cookies()}
    token = web_page.bearer_tokens()[-1]
    assert server.call(token, "GET", "/backend/nf/check").status_code == 200

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.get_by_role("status")).to_have_text("Signed out.")
    assert web_page.context.cookies() == []

    old_session = requests.get(server.url + "/api/auth/session", cookies=cookies, timeout=10)
    assert "accessToken" not in old_session.json()
    refused = server.call(token, "GET", "/backend/nf/check")
    assert refused.status_code == 401, refused.text


@web
def test_a_revoked_token_sends_the_page_back_to_sign_in(web_page, server):
    add_user(server.data_dir, "max", PASSWORD)
    page = web_page.page
    sign_in(page, server, "max")
    expect(page.locator("[data-quota]").first).not_to_be_empty()
    token = web_page.bearer_tokens()[-1]
    done = CliRunner().invoke(cli, ["token", "revoke", token, "--data-dir", str(server.data_dir)])
    assert done.exit_code == 0, done.output
    # a revocation by another process reaches the server's token cache within a second (issue 13)
    time.sleep(1.1)
    page.get_by_role("link", name="Library", exact=True).click()  # the next /backend call: a 401
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.get_by_role("status")).to_have_text("Your session has ended. Please sign in again.")
    expect(page.locator("#drafts li")).to_have_count(0)  # nothing of max's is left on the page


@web
def test_keyboard_alone_signs_in_and_reaches_create(web_page, server):
    page = web_page.page
    page.goto(server.url + "/")
    expect(page.get_by_label("Username")).to_be_focused()
    page.keyboard.type(USER)
    page.keyboard.press("Tab")
    page.keyboard.type(PASSWORD)
    page.keyboard.press("Enter")
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    page.get_by_label("Prompt").focus()
    for _ in range(30):  # tab on through the form: every control is reachable, in order
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "create-button":
            break
    outline = page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert page.evaluate("document.activeElement.id") == "create-button"
    assert outline != "none"  # a visible focus ring


# -- create, watch, library ----------------------------------------------------------------------


@web
def test_create_and_watch_progress_until_the_video_is_in_the_library(web_page, server):
    page = web_page.page
    sign_in(page, server)
    page.get_by_label("Prompt").fill("a red kite over a grey sea")
    page.get_by_label("Landscape").check()
    page.get_by_label("Duration").select_option(label="5 s")
    page.get_by_label("Style").select_option("golden")
    with page.expect_request("**/backend/nf/create") as created:
        page.get_by_role("button", name="Create").click()
    assert re.fullmatch(r"[0-9a-f-]{36}", created.value.header_value("idempotency-key") or "")
    assert created.value.post_data_json["n_frames"] == 150

    card = page.locator("li.task").filter(has_text="a red kite over a grey sea")
    expect(card).to_be_visible()
    expect(card).to_have_attribute("data-status", "running", timeout=30_000)
    wait_until(page, lambda: card.locator("progress").evaluate("bar => bar.value") > 0)
    expect(card.get_by_role("button", name="Cancel")).to_be_visible()
    page.get_by_label("Prompt").fill("a lighthouse at dusk, waves breaking below")
    snapshot(page, "web-create.png")

    expect(card.locator(".status")).to_have_text("Finished: it is in your Library.", timeout=30_000)
    page.get_by_role("link", name="Library", exact=True).click()
    draft_card = library_card(page, "a red kite over a grey sea")
    expect(draft_card).to_be_visible()
    expect(draft_card.locator("[data-param=size] dd")).to_have_text("640×352")
    expect(draft_card.locator("[data-param=style] dd")).to_have_text("golden")
    expect(draft_card.locator("[data-param=engine] dd")).to_have_text("preview (placeholder)")
    expect(draft_card.locator(".placeholder")).to_contain_text("not a video model")


@web
def test_image_to_video_uploads_the_image_first(web_page, server, tmp_path):
    image = tmp_path / "start.png"
    Image.new("RGB", (640, 352), (30, 120, 200)).save(image)
    page = web_page.page
    sign_in(page, server)
    page.get_by_label("Prompt").fill("the sea starts to move")
    page.get_by_label("Landscape").check()
    page.get_by_label("Duration").select_option(label="5 s")
    page.get_by_label("Start from an image").set_input_files(image)
    expect(page.get_by_role("img", name="The chosen image")).to_be_visible()
    with page.expect_request("**/backend/nf/create") as created:
        page.get_by_role("button", name="Create").click()
    (item,) = created.value.post_data_json["inpaint_items"]
    assert item["kind"] == "upload" and item["upload_id"].startswith("media_")
    expect(page.get_by_role("img", name="The chosen image")).to_be_hidden()  # the form is ready again
    card = page.locator("li.task").filter(has_text="the sea starts to move")
    expect(card.locator(".status")).to_have_text("Finished: it is in your Library.", timeout=30_000)


BUSY = '{"error": {"message": "Slow down.", "type": "rate_limit_error", "param": null, "code": "busy"}}'
SET_HIDDEN = """hidden => {
    Object.defineProperty(document, 'hidden', {value: hidden, configurable: true});
    document.dispatchEvent(new Event('visibilitychange'));
}"""


@web
def test_polling_honours_retry_after_and_pauses_in_a_hidden_tab(web_page, server):
    page = web_page.page
    polls: list[float] = []
    page.on("request", lambda r: "/nf/pending/v2" in r.url and polls.append(time.monotonic()))

    def first_poll_busy(route):
        if len(polls) == 1:
            route.fulfill(status=429, headers={"Retry-After": "7"}, body=BUSY,
                          content_type="application/json")
        else:
            route.continue_()

    page.route("**/backend/nf/pending/v2", first_poll_busy)
    sign_in(page, server)
    expect(page.get_by_role("status")).to_have_text("Could not refresh progress: Slow down.")
    page.get_by_label("Prompt").fill("a windmill turning slowly")
    page.get_by_role("button", name="Create").click()  # asks for a poll at once: Retry-After wins
    wait_until(page, lambda: len(polls) >= 2, timeout=15)
    assert polls[1] - polls[0] >= 6.9, polls
    expect(page.locator("#notice")).to_be_empty()  # the next answer cleared the message

    page.evaluate(SET_HIDDEN, True)
    hidden_at = len(polls)
    page.wait_for_timeout(4000)  # two or three polls' worth while a video is being made
    assert len(polls) - hidden_at <= 1, "polled in a hidden tab"  # one may have been under way
    shown_at = len(polls)
    page.evaluate(SET_HIDDEN, False)
    wait_until(page, lambda: len(polls) > shown_at, timeout=2)  # back at once
    card = page.locator("li.task").filter(has_text="a windmill turning slowly")
    expect(card.locator(".status")).to_have_text("Finished: it is in your Library.", timeout=30_000)


@web
def test_queue_position_and_cancel(web_page, server):
    token = server.token()
    ids = [server.call(token, "POST", "/backend/nf/create", json={"prompt": f"swans in a queue {n}"})
           .json()["id"] for n in range(3)]  # two workers: the third waits
    page = web_page.page
    sign_in(page, server)
    waiting = page.locator("li.task[data-status=queued]")
    expect(waiting.locator(".status")).to_have_text(
        re.compile(r"^Queued: position 1, about \d+ (s|min) to start$"))
    expect(waiting.locator("progress")).not_to_have_attribute("value", re.compile("."))  # indeterminate
    prompt = waiting.locator(".prompt").text_content()
    waiting.get_by_role("button", name="Cancel").click()
    card = page.locator("li.task").filter(has_text=prompt)
    expect(card.locator(".status")).to_have_text("Cancelled.")
    expect(card.get_by_role("button", name="Cancel")).to_be_hidden()
    for task_id in ids:  # free the workers for the tests that follow
        server.call(token, "POST", f"/backend/nf/tasks/{task_id}/cancel")


@pytest.fixture(scope="module")
def video(server):
    return server.make_video("a paper boat drifting on a pond")


@web
def test_video_loads_its_metadata_and_seeks_with_range(web_page, server, video):
    page = web_page.page
    ranged = []
    page.on("response", lambda r: "/assets/" in r.url and ranged.append(r.status))
    sign_in(page, server)
    page.get_by_role("link", name="Library", exact=True).click()
    player = library_card(page, video["prompt"]).locator("video")
    expect(player).to_have_attribute("preload", "metadata")
    expect(player).to_have_attribute("poster", re.compile(r"/thumbnail\.webp\?se="))
    player.evaluate("v => v.readyState >= 1 || new Promise(r => v.addEventListener('loadedmetadata', r))")
    assert player.evaluate("v => v.duration") == pytest.approx(video["n_frames"] / 30, abs=0.05)
    landed = player.evaluate("v => new Promise(r => { v.addEventListener('seeked', () => r(v.currentTime),"
                             " {once: true}); v.currentTime = 3.5; })")
    assert landed == pytest.approx(3.5, abs=0.2)
    assert 206 in ranged, ranged
    expect(library_card(page, video["prompt"]).locator("[data-param=duration] dd")).to_have_text("5 s")


@web
def test_download_saves_the_mp4(web_page, server, video, tmp_path):
    page = web_page.page
    sign_in(page, server)
    page.get_by_role("link", name="Library", exact=True).click()
    with page.expect_download() as info:
        library_card(page, video["prompt"]).get_by_role("link", name="Download").click()
    download = info.value
    assert download.suggested_filename == f"sora_{video['task_id']}.mp4"
    path = tmp_path / download.suggested_filename
    download.save_as(path)
    assert path.stat().st_size == video["video_bytes"]
    assert path.read_bytes()[4:8] == b"ftyp"
    assert probe(path).n_frames == video["n_frames"]


@web
def test_delete_asks_first_then_removes_the_draft(web_page, server):
    doomed = server.make_video("a sandcastle before the tide", orientation="square")
    page = web_page.page
    sign_in(page, server)
    page.get_by_role("link", name="Library", exact=True).click()
    card = library_card(page, "a sandcastle before the tide")
    card.get_by_role("button", name="Delete").click()
    expect(card.get_by_role("button", name="Keep")).to_be_focused()
    card.get_by_role("button", name="Keep").click()  # changed our mind: nothing happens
    assert server.call(server.token(), "GET", f"/backend/project_y/profile/drafts/{doomed['id']}").ok

    card.get_by_role("button", name="Delete").click()
    card.get_by_role("button", name="Yes, delete").click()
    expect(card).to_have_count(0)
    expect(page.get_by_role("status")).to_have_text("Deleted.")
    gone = server.call(server.token(), "GET", f"/backend/project_y/profile/drafts/{doomed['id']}")
    assert gone.status_code == 404


@web
def test_more_pages_through_the_library(web_page, server, video):
    token = server.token()
    for n in range(13):  # one page holds 12: refused prompts make drafts without rendering
        server.call(token, "POST", "/backend/nf/create", json={"prompt": f"forbidden page filler {n}"})
    page = web_page.page
    sign_in(page, server)
    page.get_by_role("link", name="Library", exact=True).click()
    expect(page.locator("li.draft")).to_have_count(12)
    total = len(server.call(token, "GET", "/backend/project_y/profile/drafts?limit=500").json()["items"])
    page.get_by_role("button", name="More").click()
    expect(page.locator("li.draft")).to_have_count(min(total, 24))
    refused = page.locator("li.draft[data-kind=sora_content_violation]").first
    expect(refused.locator(".problem-title")).to_have_text("Refused")
    expect(refused.locator(".reason")).to_contain_text('contains "forbidden"')
    for gen in server.call(token, "GET", "/backend/project_y/profile/drafts?limit=500").json()["items"]:
        if gen["kind"] != "sora_draft":  # leave the library as the other tests expect it
            server.call(token, "DELETE", f"/backend/project_y/profile/drafts/{gen['id']}")


# -- errors in words -----------------------------------------------------------------------------


@web
def test_refused_prompt_shows_the_reason(web_page, server):
    page = web_page.page
    sign_in(page, server)
    page.get_by_label("Prompt").fill("a forbidden dance")
    page.get_by_role("button", name="Create").click()
    expect(page.locator("#create-error")).to_have_text(re.compile(r'^Refused: .*contains "forbidden"'))
    card = page.locator("li.task").filter(has_text="a forbidden dance")
    expect(card.locator(".status")).to_have_text(re.compile("^Refused: "))


@web
def test_daily_limit_says_when_more_come(web_page, server):
    add_user(server.data_dir, "lin", PASSWORD, "--daily-limit", "1")
    token = server.token("lin")
    task = server.call(token, "POST", "/backend/nf/create", json={"prompt": "the only one today"}).json()
    server.call(token, "POST", f"/backend/nf/tasks/{task['id']}/cancel")
    page = web_page.page
    sign_in(page, server, "lin")
    limit = re.compile(r"^Daily limit reached: more in 2[34] h")
    expect(page.locator("[data-quota]").first).to_have_text(limit)
    page.get_by_label("Prompt").fill("one more, please")
    page.get_by_role("button", name="Create").click()
    expect(page.locator("#create-error")).to_have_text(re.compile(limit.pattern + r"( \d+ min)?\.$"))


@web
def test_bad_input_names_the_field(web_page, server):
    page = web_page.page
    sign_in(page, server)
    page.get_by_label("Prompt").fill("x" * (server.embedded.settings.max_prompt_chars + 1))
    page.get_by_role("button", name="Create").click()
    expect(page.locator("#create-error")).to_have_text(re.compile(r"^Prompt: "))
    expect(page.get_by_label("Prompt")).to_have_attribute("aria-invalid", "true")
    expect(page.get_by_label("Prompt")).to_be_focused()


# -- layouts -------------------------------------------------------------------------------------


@web
def test_library_cards_share_one_shape_whatever_the_orientation(web_page, server, video):
    server.make_videos({"prompt": "a lighthouse at dusk, waves breaking below", "orientation": "portrait"},
                       {"prompt": "a bowl of lemons on a blue table", "orientation": "square"})
    page = web_page.page
    sign_in(page, server)
    page.get_by_role("link", name="Library", exact=True).click()
    expect(library_card(page, "a bowl of lemons")).to_be_visible()
    players = page.locator("li.draft video")
    wait_until(page, lambda: all(players.evaluate_all("vs => vs.map(v => v.readyState >= 1)")))
    heights = page.locator("li.draft .media").evaluate_all(
        "boxes => boxes.map(b => Math.round(b.getBoundingClientRect().height))")
    assert len(set(heights)) == 1, heights  # portrait, square and landscape letterbox alike
    snapshot(page, "web-library.png")


@web
def test_phone_width_never_scrolls_sideways(browser, server, video):
    phone = Page(browser, viewport=PHONE, device_scale_factor=1, is_mobile=True, has_touch=True)
    page = phone.page
    try:
        page.goto(server.url + "/")
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        sign_in(page, server)
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        page.get_by_role("link", name="Library", exact=True).click()
        expect(library_card(page, video["prompt"])).to_be_visible()
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        snapshot(page, "web-phone.png")
    finally:
        phone.close()
    assert phone.errors == []


def _luminance(rgb: str) -> float:
    r, g, b = (int(v) / 255 for v in re.findall(r"\d+", rgb)[:3])
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


@web
def test_dark_scheme_renders(browser, server):
    dark = Page(browser, color_scheme="dark")
    try:
        sign_in(dark.page, server)
        body = dark.page.evaluate("(() => { const s = getComputedStyle(document.body); "
                                  "return [s.backgroundColor, s.color]; })()")
        card = dark.page.evaluate("getComputedStyle(document.querySelector('#create-form')).backgroundColor")
    finally:
        dark.close()
    assert _luminance(body[0]) < 0.15 and _luminance(card) < 0.2, (body, card)
    assert _luminance(body[1]) > 0.8, body


@web
def test_xss_prompt_stays_inert(web_page, server):
    page = web_page.page
    sign_in(page, server)
    page.get_by_label("Prompt").fill(XSS)
    page.get_by_role("button", name="Create").click()
    card = page.locator("li.task").filter(has_text="a kite")
    expect(card.locator(".prompt")).to_have_text(XSS)
    expect(card.locator(".status")).to_have_text("Finished: it is in your Library.", timeout=30_000)
    page.get_by_role("link", name="Library", exact=True).click()
    expect(library_card(page, "a kite").locator(".prompt")).to_have_text(XSS)
    assert page.locator("img[src=x], main script").count() == 0
    page.wait_for_timeout(300)  # an onerror would have fired by now
    # web_page's teardown asserts that no dialog opened and no script error happened


# -- the seed's Step 1 ---------------------------------------------------------------------------


@web
@pytest.mark.skipif(seed_path() is None, reason="seed document not found (set SORAKIT_SEED_FILE)")
def test_step1_token_from_devtools_runs_the_seeds_script(web_page, server, tmp_path):
    """Step 1 of the seed: sign in, open the Network tab, copy a /backend request's Authorization
    header. Step 3: the seed's Python script, run with that token against the same server."""
    page = web_page.page
    sign_in(page, server)
    expect(page.locator("[data-quota]").first).not_to_be_empty()
    headers = [r.header_value("authorization") for r in web_page.requests if "/backend/" in r.url]
    copied = next(h for h in headers if h)
    assert copied.startswith("Bearer ey")
    script = fill_in(seed_python_script(seed_path().read_text(encoding="utf-8")), {
        LIVE_HOST: server.url, "YOUR_BEARER_TOKEN_HERE": copied.removeprefix("Bearer "),
        "YOUR_COOKIE_STRING_HERE": COOKIE})
    (tmp_path / "sora_seed.py").write_text(script, encoding="utf-8")
    done = subprocess.run([sys.executable, "sora_seed.py"], capture_output=True, text=True, timeout=90,
                          cwd=tmp_path, env=client_env())
    assert done.returncode == 0, done.stdout + done.stderr
    ready = re.search(r"^VIDEO READY: (\S+)$", done.stdout, flags=re.M)
    assert ready, done.stdout
    assert requests.get(ready.group(1), timeout=30).content[4:8] == b"ftyp"
    # and the page, still open, shows the script's video in the library
    page.get_by_role("link", name="Library", exact=True).click()
    expect(library_card(page, "A happy robot dancing in the rain")).to_be_visible(timeout=15_000)

