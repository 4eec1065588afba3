"""Drafts (PROTOCOL section 4): listing, paging with an opaque cursor, one draft, deletion."""

from __future__ import annotations

from conftest import DOCUMENTED_DRAFT_KEYS, ENCODING_KEYS, assert_error


def _finish(api, count: int) -> list[str]:
    ids = [api.create(n_frames=1, prompt=f"clip {i}").json()["id"] for i in range(count)]
    return [api.wait(i)["generations"][0]["id"] for i in ids]


def test_drafts_are_newest_first_with_documented_keys(make_api):
    api = make_api(default_concurrency=10)
    gen_ids = _finish(api, 3)
    for path in ("/backend/project_y/profile/drafts", "/backend/project_y/profile/drafts/v2"):
        body = api.client.get(path, headers=api.alice).json()
        assert set(body) == {"items", "cursor"} and body["cursor"] is None
        assert [d["id"] for d in body["items"]] == list(reversed(gen_ids))
        for d in body["items"]:
            assert set(d) >= DOCUMENTED_DRAFT_KEYS and set(d["encodings"]) == ENCODING_KEYS
            assert d["encodings"]["thumbnail"]["path"].split("?")[0].endswith(".webp")
            assert isinstance(d["created_at"], float) and d["creation_config"]["n_frames"] == 1


def test_paging_visits_every_draft_once(make_api):
    api = make_api(default_concurrency=10)
    gen_ids = set(_finish(api, 7))
    seen, cursor, pages = [], None, 0
    while True:
        params = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        body = api.client.get("/backend/project_y/profile/drafts/v2", params=params, headers=api.alice).json()
        seen += [d["id"] for d in body["items"]]
        pages += 1
        cursor = body["cursor"]
        if cursor is None:
            break
    assert pages == 3 and len(seen) == 7 and set(seen) == gen_ids


def test_bad_limit_and_cursor_are_400(api):
    for limit in (0, 501, "x"):
        r = api.client.get("/backend/project_y/profile/drafts", params={"limit": limit}, headers=api.alice)
        assert_error(r, 400, "invalid_request", "limit")
    r = api.client.get("/backend/project_y/profile/drafts", params={"cursor": "%%%"}, headers=api.alice)
    assert_error(r, 400, "invalid_request", "cursor")


def test_one_draft_and_its_deletion(api):
    gen_id = _finish(api, 1)[0]
    one = api.client.get(f"/backend/project_y/profile/drafts/v2/{gen_id}", headers=api.alice).json()
    assert set(one) == {"draft"} and one["draft"]["id"] == gen_id
    url = one["draft"]["url"]
    assert api.client.get(url).status_code == 200
    r = api.client.delete(f"/backend/project_y/profile/drafts/{gen_id}", headers=api.alice)
    assert r.status_code == 200 and r.json() == {"id": gen_id, "deleted": True}
    assert not (api.settings.media_dir / gen_id).exists()
    assert api.client.get(url).status_code == 404
    assert_error(api.client.get(f"/backend/project_y/profile/drafts/v2/{gen_id}", headers=api.alice),
                 404, "not_found")
    assert api.client.get("/backend/project_y/profile/drafts", headers=api.alice).json()["items"] == []


def test_forged_cursors_are_400_whatever_they_hold(api):
    import base64

    forged = ['[1' + '0' * 400 + ',"x"]', '[' * 5000 + ']' * 5000, '[1, "\\ud800"]', '[NaN, "x"]',
              '{"a": 1}', '[1, 2]']
    for text in forged:
        cursor = base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")
        r = api.client.get("/backend/project_y/profile/drafts", params={"cursor": cursor}, headers=api.alice)
        assert_error(r, 400, "invalid_request", "cursor")
