"""Posts (PROTOCOL section 2): share a draft, read it as anyone, the public permalink page, take it
down; deleting the draft takes its posts with it."""

from __future__ import annotations

import html
import re
import time

import pytest

from conftest import DOCUMENTED_DRAFT_KEYS, assert_error
from sorakit.store import posts as post_store

POST = "/backend/project_y/post"
POST_KEYS = {"id", "permalink", "text", "post_text", "posted_at", "created_at", "attachments",
             "generation_id", "kind", "like_count", "view_count", "remix_count"}
TEXT = 'Kites & <b>"sea"</b> <script>alert(1)</script>'


@pytest.fixture
def api(make_api):
    return make_api(default_concurrency=10)


def _draft(api, headers=None, prompt="a red kite over a grey sea") -> str:
    task = api.create(headers=headers, n_frames=1, prompt=prompt).json()["id"]
    done = api.wait(task, headers=headers)
    assert done["status"] == "succeeded", done
    return done["generations"][0]["id"]


def _post(api, gen_id, headers=None, text=TEXT, **extra):
    body = {"attachments_to_create": [{"generation_id": gen_id, "kind": "sora"}], "post_text": text, **extra}
    return api.client.post(POST, json=body, headers=headers or api.alice)


def _video_src(page: str) -> str:
    found = re.search(r'<video [^>]*src="([^"]+)"', page)
    assert found, page
    return html.unescape(found.group(1))


def test_post_a_draft_and_read_it_as_anyone(api):
    gen_id = _draft(api)
    r = _post(api, gen_id, unknown_key={"kept": "out of the way"})
    assert r.status_code == 200, r.text
    post = r.json()["post"]
    assert set(post) >= POST_KEYS
    assert re.fullmatch(r"s_[0-9a-f]{32}", post["id"])
    assert post["permalink"] == f"http://testserver/p/{post['id']}"
    assert post["text"] == post["post_text"] == TEXT
    assert post["generation_id"] == gen_id and post["kind"] == "sora"
    assert isinstance(post["posted_at"], float) and post["posted_at"] == post["created_at"]
    assert (post["like_count"], post["view_count"], post["remix_count"]) == (0, 0, 0)
    [draft] = post["attachments"]
    assert set(draft) >= DOCUMENTED_DRAFT_KEYS and draft["id"] == gen_id
    assert api.client.get(draft["downloadable_url"]).headers["content-type"] == "video/mp4"

    for headers in (api.alice, api.bob):  # a post is public to every signed-in user
        got = api.client.get(f"{POST}/{post['id']}", headers=headers)
        assert got.status_code == 200, got.text
        assert set(got.json()) == {"post"} and got.json()["post"]["id"] == post["id"]
        assert set(got.json()["post"]) >= POST_KEYS
    assert_error(api.client.get(f"{POST}/{post['id']}"), 401, "invalid_token")
    assert_error(api.client.get(f"{POST}/s_{'0' * 32}", headers=api.bob), 404, "not_found")
    assert post_store.get_post(api.services.store, post["id"])["generation_id"] == gen_id
    assert [p["id"] for p in post_store.posts_of_generation(api.services.store, gen_id)] == [post["id"]]


def test_permalink_page_needs_no_credentials_and_shows_nothing_of_the_poster(make_api):
    api = make_api(default_concurrency=10)
    carol = api.services.store.create_user("carol-the-poster", email="carol@example.org")
    headers = api.headers_for("carol-the-poster")
    gen_id = _draft(api, headers=headers)
    post = _post(api, gen_id, headers=headers).json()["post"]
    api.client.cookies.clear()
    page = api.client.get(f"/p/{post['id']}")
    assert page.status_code == 200, page.text
    assert page.headers["content-type"].startswith("text/html")
    body = page.text
    assert html.escape(TEXT) in body and "<script>alert(1)" not in body and "<b>" not in body
    assert "made with sorakit" in body and "<title>" in body
    for private in ("carol", carol["id"], "example.org", headers["Authorization"].split()[1], "user_",
                    "task_"):
        assert private not in body, private
    # the strict policy of the web app's pages, with the page's one style block allowed by hash
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "'unsafe-inline'" not in csp and "style-src 'self' 'sha256-" in csp
    assert "frame-ancestors 'none'" in csp and "default-src 'self'" in csp
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["cache-control"] == "no-store"
    head = api.client.head(f"/p/{post['id']}")  # link unfurlers ask first
    assert head.status_code == 200 and head.headers["content-type"].startswith("text/html")
    assert "<script" not in body.replace(html.escape("<script>"), "")
    src = _video_src(body)
    video = api.client.get(src)
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    assert video.content[4:8] == b"ftyp"
    poster = re.search(r'poster="([^"]+)"', body)
    assert poster and api.client.get(html.unescape(poster.group(1))).headers["content-type"] == "image/webp"


def test_page_of_a_post_without_text(api):
    post = _post(api, _draft(api), text=None).json()["post"]
    assert post["text"] is None and post["post_text"] is None
    page = api.client.get(f"/p/{post['id']}")
    assert page.status_code == 200 and "<video" in page.text and 'class="text"' not in page.text


def test_unknown_post_page_is_a_404_page(api):
    for post_id in (f"s_{'1' * 32}", "nonsense", "%3Cscript%3E"):
        page = api.client.get(f"/p/{post_id}")
        assert page.status_code == 404
        assert page.headers["content-type"].startswith("text/html")
        assert "This post does not exist or was deleted." in page.text
        assert "<script" not in page.text
        assert "content-security-policy" in page.headers


def test_only_the_poster_deletes_a_post(api):
    gen_id = _draft(api)
    post = _post(api, gen_id).json()["post"]
    src = _video_src(api.client.get(f"/p/{post['id']}").text)
    assert_error(api.client.delete(f"{POST}/{post['id']}", headers=api.bob), 404, "not_found")
    assert api.client.get(f"/p/{post['id']}").status_code == 200
    r = api.client.delete(f"{POST}/{post['id']}", headers=api.alice)
    assert r.status_code == 200 and r.json() == {"id": post["id"], "deleted": True}
    page = api.client.get(f"/p/{post['id']}")
    assert page.status_code == 404 and "This post does not exist or was deleted." in page.text
    assert src not in page.text
    for headers in (api.alice, api.bob):
        assert_error(api.client.get(f"{POST}/{post['id']}", headers=headers), 404, "not_found")
    assert_error(api.client.delete(f"{POST}/{post['id']}", headers=api.alice), 404, "not_found")
    # the draft itself stays
    assert api.client.get(f"/backend/project_y/profile/drafts/{gen_id}", headers=api.alice).status_code == 200
    assert post_store.get_post(api.services.store, post["id"]) is None
    assert post_store.posts_of_generation(api.services.store, gen_id) == []
    assert len(post_store.posts_of_generation(api.services.store, gen_id, include_deleted=True)) == 1


def test_deleting_the_draft_takes_its_posts(api):
    gen_id = _draft(api)
    first = _post(api, gen_id).json()["post"]["id"]
    second = _post(api, gen_id, text="again").json()["post"]["id"]
    r = api.client.delete(f"/backend/project_y/profile/drafts/{gen_id}", headers=api.alice)
    assert r.status_code == 200, r.text
    for post_id in (first, second):
        assert api.client.get(f"/p/{post_id}").status_code == 404
        assert_error(api.client.get(f"{POST}/{post_id}", headers=api.alice), 404, "not_found")
    assert post_store.posts_of_generation(api.services.store, gen_id, include_deleted=True) == []


def test_deleting_the_task_takes_its_posts(api):
    task_id = api.create(n_frames=1).json()["id"]
    gen_id = api.wait(task_id)["generations"][0]["id"]
    post_id = _post(api, gen_id).json()["post"]["id"]
    assert api.services.store.delete_task(task_id, api.services.store.user_by_name("alice")["id"]) is not None
    assert api.client.get(f"/p/{post_id}").status_code == 404
    assert post_store.posts_of_generation(api.services.store, gen_id, include_deleted=True) == []


def test_post_text_is_moderated(make_api):
    api = make_api(blocked_terms=["volcano"])
    gen_id = _draft(api)
    r = _post(api, gen_id, text="Look at this VOLCANO!")
    error = assert_error(r, 400, "content_policy_violation", "post_text")
    assert "refused" in error["message"] and "volcano" not in error["message"].lower()
    assert post_store.posts_of_generation(api.services.store, gen_id) == []
    assert _post(api, gen_id, text="volcanoes are fine as a longer word").status_code == 200


def test_bad_attachments_are_400_with_param(api):
    gen_id = _draft(api)
    bob_gen = _draft(api, headers=api.bob)
    cases = [
        ({"attachments_to_create": []}, "attachments_to_create"),
        ({"attachments_to_create": [{"generation_id": gen_id}, {"generation_id": gen_id}]},
         "attachments_to_create"),
        ({"attachments_to_create": [{"generation_id": "gen_nope"}]},
         "attachments_to_create[0].generation_id"),
        ({"attachments_to_create": [{"generation_id": bob_gen}]}, "attachments_to_create[0].generation_id"),
        ({"attachments_to_create": [{"generation_id": gen_id, "kind": "cameo"}]},
         "attachments_to_create[0].kind"),
        ({"attachments_to_create": [{"kind": "sora"}]}, "attachments_to_create.0.generation_id"),
        ({"post_text": "no attachments"}, "attachments_to_create"),
        ({"attachments_to_create": "gen_x"}, "attachments_to_create"),
        ({"attachments_to_create": [{"generation_id": gen_id}], "post_text": "x" * 10_001}, "post_text"),
    ]
    for body, param in cases:
        assert_error(api.client.post(POST, json=body, headers=api.alice), 400, "invalid_request", param)
    assert_error(api.client.post(POST, content=b"{", headers=api.alice), 400, "invalid_request")
    assert_error(api.client.post(POST, json={"attachments_to_create": []}), 401, "invalid_token")


def test_a_refused_prompt_cannot_be_posted(make_api):
    api = make_api(blocked_terms=["volcano"])
    task_id = api.create(n_frames=1, prompt="a volcano").json()["id"]
    gen = api.wait(task_id)["generations"][0]
    assert gen["kind"] == "sora_content_violation"
    r = _post(api, gen["id"], text="ok")
    assert_error(r, 400, "invalid_request", "attachments_to_create[0].generation_id")


def test_remix_count_counts_remixes_of_the_post(api):
    gen_id = _draft(api)
    post_id = _post(api, gen_id).json()["post"]["id"]
    # anyone may remix a post (PROTOCOL section 2: remix_target_id = s_<32 hex>)
    remix = api.create(headers=api.bob, n_frames=1, prompt="the same kite, at night", remix_target_id=post_id)
    assert remix.status_code == 200, remix.text
    api.wait(remix.json()["id"], headers=api.bob)
    assert post_store.remix_count(api.services.store, post_id) == 1
    got = api.client.get(f"{POST}/{post_id}", headers=api.alice).json()["post"]
    assert got["remix_count"] == 1
    # a remix of the draft itself is not a remix of the post
    api.wait(api.create(n_frames=1, remix_target_id=gen_id).json()["id"])
    assert post_store.remix_count(api.services.store, post_id) == 1


@pytest.mark.web
def test_permalink_page_in_chromium(tmp_path):
    """The page as a browser sees it: its one style block passes the policy, the video loads,
    and nothing is refused, in light and dark."""
    from pathlib import Path

    sync_playwright = pytest.importorskip("playwright.sync_api").sync_playwright
    if not Path("/usr/bin/chromium").is_file():
        pytest.skip("/usr/bin/chromium is missing")
    import requests

    from sorakit.client.embedded import EmbeddedServer
    from sorakit.config import load_settings
    from sorakit.server import auth

    server = EmbeddedServer(load_settings({"data_dir": tmp_path, "workers": 1})).start()
    try:
        store = server.services.store
        token, _ = auth.issue(store, server.services.jwt_key, store.create_user("ada")["id"], 3600)
        headers = {"Authorization": f"Bearer {token}"}
        task = requests.post(f"{server.url}/backend/nf/create", json={"prompt": "a kite", "n_frames": 30},
                             headers=headers).json()["id"]
        for _ in range(300):
            done = requests.get(f"{server.url}/backend/nf/tasks/{task}/v2", headers=headers).json()
            if done["status"] == "succeeded":
                break
            time.sleep(0.1)
        body = {"attachments_to_create": [{"generation_id": done["generations"][0]["id"], "kind": "sora"}],
                "post_text": TEXT}
        made = requests.post(f"{server.url}{POST}", json=body, headers=headers).json()
        permalink = made["post"]["permalink"]
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
            for scheme in ("light", "dark"):
                context = browser.new_context(color_scheme=scheme, viewport={"width": 1280, "height": 800})
                page = context.new_page()
                problems: list[str] = []
                page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
                page.on("pageerror", lambda exc: problems.append(str(exc)))
                page.on("dialog", lambda d: (problems.append(f"dialog {d.message}"), d.dismiss()))
                page.goto(permalink)
                page.wait_for_function("document.querySelector('video').readyState >= 1", timeout=10_000)
                assert page.evaluate("getComputedStyle(document.querySelector('main')).display") == "flex"
                assert page.inner_text(".text") == TEXT
                size = page.evaluate("[document.querySelector('video').videoWidth, "
                                     "document.querySelector('video').videoHeight]")
                assert size == [352, 640]
                assert problems == []
                context.close()
            browser.close()
    finally:
        server.stop()
