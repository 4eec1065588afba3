"""The web app builds on a draft: Remix, Extend, Share (and Unshare), and Variations in the create
form. Headless Chromium (Playwright) against a real server, as in ``test_web.py``, whose server,
browser and page fixtures this module reuses (with a server of its own).

Each browser test also saves a screenshot as ``/tmp/web_ops_*.png`` (the draft with its buttons,
the open forms, the shared link, the phone layout), for a person to look at.
"""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import pytest
import requests

from test_web import (PHONE, Page, browser, library_card, server, sign_in, wait_until,  # noqa: F401
                      web, web_page)

try:
    from playwright.sync_api import expect
except ImportError:  # the browser fixture skips these tests then
    expect = None

SHOTS = Path(tempfile.gettempdir())
DONE = "Finished: it is in your Library."


def shot(page, name: str, locator=None) -> Path:
    path = SHOTS / f"web_ops_{name}.png"
    (locator or page).screenshot(path=str(path), animations="disabled", caret="initial")
    return path


def drafts(server) -> list[dict]:
    return server.call(server.token(), "GET", "/backend/project_y/profile/drafts?limit=200").json()["items"]


def open_library(page) -> None:
    page.get_by_role("link", name="Library", exact=True).click()
    expect(page.get_by_role("heading", name="Library")).to_be_visible()


@pytest.fixture(scope="module")
def source(server):
    """A short finished landscape video to build on."""
    return server.make_video("a paper boat drifting on a pond")


# -- the buttons and forms -------------------------------------------------------------------------


@web
def test_a_finished_draft_has_remix_extend_and_share(web_page, server, source):
    refused = server.call(server.token(), "POST", "/backend/nf/create", json={"prompt": "forbidden boat"}).json()
    page = web_page.page
    sign_in(page, server)
    open_library(page)
    card = library_card(page, source["prompt"])
    buttons = card.get_by_role("group", name="Build on this video")
    for name in ("Remix", "Extend", "Share"):
        expect(buttons.get_by_role("button", name=name)).to_have_attribute("aria-expanded", "false")
    expect(card.locator(".tag")).to_have_count(0)  # a plain video: no badge
    shot(page, "draft_buttons", card)
    # a refused draft has no video to build on
    no_video = page.locator("li.draft[data-kind=sora_content_violation]")
    expect(no_video).to_have_count(1)
    expect(no_video.locator(".ops")).to_have_count(0)

    # keyboard: the button opens its form and focuses its first field; Escape closes it again
    buttons.get_by_role("button", name="Remix").focus()
    page.keyboard.press("Enter")
    expect(card.get_by_label("New prompt")).to_be_focused()
    expect(buttons.get_by_role("button", name="Remix")).to_have_attribute("aria-expanded", "true")
    slider = card.get_by_label("How far from the original")
    expect(slider).to_have_value("0.4")
    shot(page, "remix_form", card)
    page.keyboard.press("Escape")
    expect(card.get_by_role("form", name="Remix this video")).to_be_hidden()
    expect(buttons.get_by_role("button", name="Remix")).to_be_focused()

    # one form at a time
    buttons.get_by_role("button", name="Extend").click()
    expect(card.get_by_label("Seconds to add")).to_have_value("5")
    expect(card.get_by_label("What happens next")).to_be_visible()
    shot(page, "extend_form", card)
    buttons.get_by_role("button", name="Share", exact=True).click()
    expect(card.get_by_role("form", name="Extend this video")).to_be_hidden()
    expect(card.get_by_role("form", name="Share this video")).to_be_visible()
    card.get_by_role("button", name="Cancel").click()
    expect(card.get_by_role("form", name="Share this video")).to_be_hidden()
    for draft in drafts(server):  # the refused draft: leave the library tidy
        if draft["task_id"] == refused["id"]:
            server.call(server.token(), "DELETE", f"/backend/project_y/profile/drafts/{draft['id']}")


@web
def test_remix_runs_as_a_task_and_makes_a_remix_draft(web_page, server, source):
    page = web_page.page
    sign_in(page, server)
    open_library(page)
    card = library_card(page, source["prompt"])
    card.get_by_role("button", name="Remix").click()
    form = card.get_by_role("form", name="Remix this video")
    form.get_by_role("button", name="Remix").click()  # no prompt yet: said inline, nothing sent
    expect(form.get_by_role("alert")).to_have_text("Write the new prompt: what the remix should show.")
    expect(card.get_by_label("New prompt")).to_have_attribute("aria-invalid", "true")

    card.get_by_label("New prompt").fill("the paper boat in a storm at night")
    slider = card.get_by_label("How far from the original")
    slider.focus()
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    expect(card.locator("output.strength")).to_have_text("0.50")
    with page.expect_request("**/backend/nf/create") as sent:
        form.get_by_role("button", name="Remix").click()
    body = sent.value.post_data_json
    assert body["remix_target_id"] == source["id"] and body["remix_strength"] == pytest.approx(0.5)
    assert body["prompt"] == "the paper boat in a storm at night"
    assert "n_frames" not in body and "orientation" not in body  # the source's own
    assert sent.value.header_value("idempotency-key")
    expect(form).to_be_hidden()
    expect(card.get_by_role("status").first).to_contain_text("Remix started.")
    shot(page, "remix_started", card)

    card.get_by_role("link", name="See it in progress").click()
    task = page.locator("li.task").filter(has_text="the paper boat in a storm at night")
    expect(task.locator(".meta")).to_contain_text("Remix")
    shot(page, "remix_in_progress")
    expect(task.locator(".status")).to_have_text(DONE, timeout=30_000)
    open_library(page)
    remix = library_card(page, "the paper boat in a storm at night")
    expect(remix.locator(".tag")).to_have_text("Remix")
    made = next(d for d in drafts(server) if d["prompt"] == "the paper boat in a storm at night")
    assert made["generation_type"] == "remix" and made["source_generation_id"] == source["id"]
    assert made["creation_config"]["remix_strength"] == pytest.approx(0.5)


@web
def test_extend_makes_one_longer_draft(web_page, server, source):
    page = web_page.page
    held = []
    page.route("**/long_video_extension", lambda route: held.append(route))  # answered below
    sign_in(page, server)
    open_library(page)
    card = library_card(page, source["prompt"])
    card.get_by_role("button", name="Extend").click()
    card.get_by_label("What happens next").fill("the boat reaches the far bank")
    form = card.get_by_role("form", name="Extend this video")
    form.get_by_role("button", name="Extend").click()
    busy = form.get_by_role("button", name="Extending…")
    expect(busy).to_be_disabled()  # while the request runs
    wait_until(page, lambda: held)
    assert held[0].request.post_data_json == {"user_prompt": "the boat reaches the far bank",
                                              "extension_duration_s": 5, "enable_rewrite": False}
    held[0].continue_()
    expect(card.get_by_role("status").first).to_contain_text("Extension started.")

    page.get_by_role("link", name="Create").click()
    task = page.locator("li.task").filter(has_text="the boat reaches the far bank")
    expect(task.locator(".meta")).to_contain_text("Extension")
    expect(task.locator(".status")).to_have_text(DONE, timeout=40_000)
    made = next(d for d in drafts(server) if d["generation_type"] == "extension")
    assert made["source_generation_id"] == source["id"]
    assert made["n_frames"] == source["n_frames"] + 5 * 30  # the source, then 5 s more
    open_library(page)
    longer = page.locator(f"li.draft[data-gen-id='{made['id']}']")
    expect(longer.locator(".tag")).to_have_text("Extended +5 s")
    player = longer.locator("video")
    player.evaluate("v => v.readyState >= 1 || new Promise(r => v.addEventListener('loadedmetadata', r))")
    assert player.evaluate("v => v.duration") == pytest.approx(made["n_frames"] / 30, abs=0.1)


@web
def test_share_gives_a_public_link_that_copies_and_unshares(browser, server, source):  # noqa: F811
    owner = Page(browser)
    owner.context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)
    page = owner.page
    try:
        sign_in(page, server)
        open_library(page)
        card = library_card(page, source["prompt"])
        card.get_by_role("button", name="Share", exact=True).click()
        card.get_by_label("Text").fill("our forbidden boat")  # a blocked term: the server says no
        card.get_by_role("form", name="Share this video").get_by_role("button", name="Share", exact=True).click()
        error = card.get_by_role("form", name="Share this video").get_by_role("alert")
        expect(error).to_contain_text("The post text was refused")
        expect(card.get_by_label("Text")).to_have_attribute("aria-invalid", "true")

        card.get_by_label("Text").fill("my boat, on the pond")
        card.get_by_role("form", name="Share this video").get_by_role("button", name="Share", exact=True).click()
        shared = card.get_by_role("group", name="Shared link")
        link = shared.get_by_role("link")
        expect(link).to_have_text(re.compile(r"^http://127\.0\.0\.1:\d+/p/s_[0-9a-f]{32}$"))
        permalink = link.get_attribute("href")
        expect(shared.get_by_role("button", name="Copy link")).to_be_focused()
        expect(card.get_by_role("button", name="Share", exact=True)).to_be_hidden()  # Unshare stands in for it
        shared.get_by_role("button", name="Copy link").click()
        expect(shared.locator(".copied")).to_have_text("Copied.")
        assert page.evaluate("navigator.clipboard.readText()") == permalink
        shot(page, "share_result", card)

        # anyone: a fresh context, no cookies, no token
        stranger = browser.new_context()
        try:
            public = stranger.new_page()
            answer = public.goto(permalink)
            assert answer.status == 200
            expect(public.locator("video")).to_have_count(1)
            expect(public.locator(".text")).to_have_text("my boat, on the pond")
            public.locator("video").evaluate(
                "v => v.readyState >= 1 || new Promise(r => v.addEventListener('loadedmetadata', r))")
            assert stranger.cookies() == []
            shot(public, "permalink_page")
        finally:
            stranger.close()

        shared.get_by_role("button", name="Unshare").click()
        expect(card.get_by_role("status").first).to_have_text("Unshared: the link no longer works.")
        expect(shared).to_be_hidden()
        expect(card.get_by_role("button", name="Share", exact=True)).to_be_focused()
        assert requests.get(permalink, timeout=10).status_code == 404
    finally:
        owner.close()
    assert owner.errors == [] and owner.dialogs == []


@web
def test_variations_make_several_drafts_in_one_task(web_page, server):
    page = web_page.page
    sign_in(page, server)
    page.get_by_label("Prompt").fill("a kite, two ways")
    page.get_by_label("Duration").select_option(label="5 s")
    expect(page.get_by_label("Variations")).to_have_value("1")
    page.get_by_label("Variations").select_option("2")
    with page.expect_request("**/backend/nf/create") as sent:
        page.get_by_role("button", name="Create").click()
    assert sent.value.post_data_json["nsamples"] == 2
    task = page.locator("li.task").filter(has_text="a kite, two ways")
    expect(task.locator(".meta")).to_contain_text("2 variations")
    expect(task.locator(".status")).to_have_text("Finished: all 2 are in your Library.", timeout=40_000)
    open_library(page)
    cards = library_card(page, "a kite, two ways")
    expect(cards).to_have_count(2)
    assert sorted(cards.locator(".tag").all_text_contents()) == ["Variation 1/2", "Variation 2/2"]
    made = [d for d in drafts(server) if d["prompt"] == "a kite, two ways"]
    assert sorted(d["variant_index"] for d in made) == [0, 1]
    assert len({d["task_id"] for d in made}) == 1
    # each shows the seed it was made with: the task's plus its index, recorded per draft
    task_seed = min(d["creation_config"]["seed"] for d in made)
    for draft in made:
        assert draft["creation_config"]["seed"] == task_seed + draft["variant_index"]
        seed = page.locator(f"li.draft[data-gen-id='{draft['id']}'] [data-param=seed] dd")
        expect(seed).to_have_text(str(draft["creation_config"]["seed"]))
    shot(page, "library_badges")


@web
def test_phone_width_and_dark_scheme_fit_the_forms_and_the_shared_link(browser, server, source):  # noqa: F811
    phone = Page(browser, viewport=PHONE, device_scale_factor=1, is_mobile=True, has_touch=True,
                 color_scheme="dark")
    page = phone.page
    try:
        sign_in(page, server)
        open_library(page)
        card = library_card(page, source["prompt"])
        card.get_by_role("button", name="Remix").click()
        card.get_by_label("New prompt").fill("a long prompt " * 12)
        card.scroll_into_view_if_needed()
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        shot(page, "phone_remix", card)
        card.get_by_role("button", name="Share", exact=True).click()
        card.get_by_role("form", name="Share this video").get_by_role("button", name="Share", exact=True).click()
        expect(card.get_by_role("group", name="Shared link")).to_be_visible()
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        shot(page, "phone_share", card)
        card.get_by_role("button", name="Unshare").click()
        expect(card.get_by_role("button", name="Share", exact=True)).to_be_visible()
    finally:
        phone.close()
    assert phone.errors == []
