"""The browser console at `/`, driven in Debian's Chromium by Playwright against the real server."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from playwright.async_api import Browser, BrowserContext, ConsoleMessage, Page, async_playwright, expect

from tests.conftest import ROOT, Client, ServerProcess, login, unique_user

CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or shutil.which("chromium-headless-shell")
# Skip on a machine without a browser, never in CI.
pytestmark = pytest.mark.skipif(not CHROMIUM and not os.environ.get("CI"), reason="no chromium")

# Screenshots go to the git-ignored artifacts/; UPDATE_SCREENSHOTS=1 refreshes the README's copies.
SCREENSHOTS = ROOT / ("docs/screenshots" if os.environ.get("UPDATE_SCREENSHOTS") == "1" else "artifacts")
CONSOLE_SETTINGS = {
    "RANDOM_INTERVAL_S": "0.2",
    "EDIT_COOLDOWN_S": "6",
    "LOCK_SWEEP_S": "0.2",
    "CSV_FLUSH_S": "0.2",
    "BACKUP_INTERVAL_S": "0",
}
MakeServer = Callable[..., ServerProcess]


def row(page: Page, row_id: int) -> Any:
    return page.locator(f'.grid-row[data-row-id="{row_id}"]')


def cell(page: Page, row_id: int, column: str) -> Any:
    return row(page, row_id).locator(f'[data-col="{column}"]')


class Console:
    """A browser with pages that record every script error and console error."""

    def __init__(self, browser: Browser) -> None:
        self.browser = browser
        self.errors: list[str] = []
        # Failed responses the test provokes on purpose; the browser logs each as an error.
        self.expected_http: list[str] = []
        self.contexts: list[BrowserContext] = []
        # Pages the test has taken offline: socket.io keeps retrying its own endpoint, and
        # Chromium logs each attempt refused by the emulated outage as an error.
        self.offline_pages: set[Page] = set()

    async def page(self, width: int = 1280, height: int = 720) -> Page:
        context = await self.browser.new_context(viewport={"width": width, "height": height})
        self.contexts.append(context)
        page = await context.new_page()
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))

        def on_console(msg: ConsoleMessage) -> None:
            if msg.type != "error":
                return
            url = msg.location.get("url", "")
            if page in self.offline_pages and "net::ERR_INTERNET_DISCONNECTED" in msg.text and "/socket.io/" in url:
                return
            status = re.search(r"status of (\d+)", msg.text)
            if status and f"{status.group(1)} {msg.location.get('url', '')}" in self.expected_http:
                return
            self.errors.append(f"console: {msg.text} at {msg.location.get('url')}")

        page.on("console", on_console)
        return page

    async def logged_in(self, url: str, username: str, width: int = 1280, height: int = 720) -> Page:
        page = await self.page(width, height)
        await page.goto(url + "/")
        await page.fill("#login-username", username)
        await page.fill("#login-password", "secret-pw")
        await page.press("#login-password", "Enter")
        await expect(page.locator("#conn-status")).to_have_text("connected")
        await expect(row(page, 1)).to_be_visible()
        return page


@pytest.fixture
async def console() -> AsyncIterator[Console]:
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM)
        c = Console(browser)
        try:
            yield c
        finally:
            await browser.close()
    assert not c.errors, c.errors


async def refresh_until_backups(page: Page) -> None:
    for _ in range(50):
        await page.click("#backups-refresh")
        if await page.locator("#backups tbody tr[data-name]").count() > 0:
            return
        await asyncio.sleep(0.2)
    raise AssertionError("no backup appeared")


async def test_two_users_share_locks_edits_cooldown_candles_and_restore(
    make_server: MakeServer, console: Console
) -> None:
    srv = make_server(CONSOLE_SETTINGS)
    alice, bob = unique_user("alice"), unique_user("bob")
    a = await console.logged_in(srv.url, alice)
    b = await console.logged_in(srv.url, bob)
    await expect(a.locator("#grid-head")).to_contain_text("broker")
    await expect(a.locator("#grid-head")).to_contain_text("number")
    original = await cell(b, 2, "broker").inner_text()

    # A takes row 2's lock: B sees A's name on the row within a second.
    await row(a, 2).locator('[data-action="edit"]').click()
    await expect(row(a, 2).locator(".badge")).to_contain_text("you")
    await expect(row(b, 2).locator(".badge")).to_contain_text(f"locked by {alice}", timeout=1000)
    await expect(row(b, 2).locator(".badge")).to_contain_text(re.compile(r"\d+:\d\d"))

    # B tries to edit it: told who holds it.
    await row(b, 2).locator('[data-action="edit"]').click()
    await expect(b.locator("#notice")).to_contain_text(f"Row 2 is locked by {alice}")

    # A saves with Enter: B's cell shows the new value, then the row cools down for everyone.
    await expect(row(a, 2).locator('input[data-col="user"]')).to_be_focused()
    editor = row(a, 2).locator('input[data-col="broker"]')
    await editor.fill("Console Broker")
    await editor.press("Enter")
    await expect(cell(b, 2, "broker")).to_have_text("Console Broker")
    await expect(cell(a, 2, "broker")).to_have_text("Console Broker")
    await expect(row(b, 2).locator(".badge")).to_contain_text(re.compile(r"cooldown \d s"))
    await row(b, 2).locator('[data-action="edit"]').click()
    cooldown_message = re.compile(r"Row 2 was just edited\. You can lock it again in \d s")
    await expect(b.locator("#notice")).to_contain_text(cooldown_message)

    # The chart has candles from the backfill and gains a bar on the 1s interval.
    await a.click('#intervals [data-interval="1s"]')
    await a.wait_for_function("() => Number(document.querySelector('#chart').dataset.bars) > 0")
    bars = int(await a.locator("#chart").get_attribute("data-bars") or "0")
    await a.wait_for_function(f"() => Number(document.querySelector('#chart').dataset.bars) > {bars}", timeout=5000)
    await expect(a.locator("#random-value")).to_have_text(re.compile(r"^\d+\.\d\d$"))
    await expect(a.locator("#chart canvas").first).to_be_visible()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await a.screenshot(path=str(SCREENSHOTS / "console.png"))

    # Restoring the oldest backup (the table before the edit) refreshes both views.
    await refresh_until_backups(a)
    await a.locator("#backups tbody tr[data-name]").last.locator("button").click()
    await expect(a.locator("#confirm")).to_be_visible()
    await a.click("#confirm-ok")
    await expect(cell(a, 2, "broker")).to_have_text(original)
    await expect(cell(b, 2, "broker")).to_have_text(original)
    await expect(b.locator("#notice")).to_contain_text(f"{alice} restored a backup")
    await expect(row(b, 2).locator(".badge")).to_have_count(0)


async def test_keyboard_escape_conflict_add_delete_and_a_narrow_window(
    make_server: MakeServer, console: Console
) -> None:
    srv = make_server(CONSOLE_SETTINGS)
    alice = unique_user("alice")
    a = await console.logged_in(srv.url, alice, width=420, height=860)
    watcher = await console.logged_in(srv.url, unique_user("carol"))

    # Escape cancels and unlocks.
    await row(a, 3).locator('[data-action="edit"]').click()
    await expect(row(watcher, 3).locator(".badge")).to_contain_text(f"locked by {alice}")
    await row(a, 3).locator('input[data-col="pnl"]').press("Escape")
    await expect(row(a, 3).locator("input")).to_have_count(0)
    await expect(row(watcher, 3).locator(".badge")).to_have_count(0)

    # A typed input refuses a non-number before anything is sent.
    await row(a, 4).locator('[data-action="edit"]').click()
    await expect(row(a, 4).locator('input[data-col="pnl"]')).to_have_attribute("type", "number")

    # The same user changes row 4 from another client: saving shows their values.
    token = await login(srv.url, alice)
    other = Client()
    await other.connect(srv.url, auth={"token": token}, transports=["websocket"], wait_timeout=10)
    try:
        ack = await other.ask("update_csv", {"id": 4, "values": {"broker": "Elsewhere"}})
        assert ack["ok"], ack
    finally:
        await other.disconnect()
    await row(a, 4).locator('input[data-col="pnl"]').fill("42.5")
    await row(a, 4).locator('input[data-col="pnl"]').press("Enter")
    notice = a.locator("#notice")
    await expect(notice).to_contain_text("Someone changed row 4 first")
    await expect(notice).to_contain_text('broker = "Elsewhere"')
    await row(a, 4).locator('input[data-col="pnl"]').press("Enter")  # save over theirs
    await expect(cell(watcher, 4, "pnl")).to_have_text("42.5")
    await expect(cell(watcher, 4, "broker")).to_have_text("Elsewhere")

    # Add a row with the dialog; delete it after a confirmation.
    await watcher.click("#add-row")
    await watcher.fill('#add-fields input[data-col="user"]', "added_by_console")
    await watcher.fill('#add-fields input[data-col="pnl"]', "1.25")
    await watcher.press('#add-fields input[data-col="pnl"]', "Enter")
    added = a.locator(".grid-row", has_text="added_by_console")
    await a.evaluate("window.tablecast.table.scrollToIndex(window.tablecast.table.total - 1)")
    await expect(added).to_be_visible()
    new_id = int(await added.get_attribute("data-row-id") or "0")
    await row(a, new_id).locator('[data-action="delete"]').click()
    await a.click("#confirm-ok")
    await expect(row(a, new_id)).to_have_count(0)
    await watcher.evaluate("window.tablecast.table.scrollToIndex(window.tablecast.table.total - 1)")
    await expect(watcher.locator(".grid-row", has_text="added_by_console")).to_have_count(0)

    # Log out: back to the sign-in form, and the token no longer works.
    await a.click("#logout")
    await expect(a.locator("#login-form")).to_be_visible()
    await expect(a.locator("#conn-status")).to_have_text("offline")


async def test_virtual_scrolling_fetches_only_the_pages_in_view(
    make_server: MakeServer, console: Console, tmp_path: Path
) -> None:
    rows = 300_000
    data = tmp_path / "big"
    data.mkdir()
    with (data / "backend_table.csv").open("w") as f:
        f.write("id,name,score,level\n")
        f.writelines(f"{i},name_{i},{i * 0.5},{i % 7}\n" for i in range(1, rows + 1))
    srv = make_server(CONSOLE_SETTINGS, data_dir=data)
    page = await console.logged_in(srv.url, unique_user("scroll"))
    await expect(page.locator("#table-meta")).to_contain_text("300,000 rows")
    await page.evaluate("document.querySelector('#grid').scrollTop = 1e9")
    await expect(row(page, rows)).to_be_visible()
    await page.evaluate("window.tablecast.table.scrollToIndex(150000)")
    await expect(row(page, 150_001)).to_be_visible()
    for _ in range(20):  # a fast wheel scroll
        await page.mouse.move(400, 400)
        await page.mouse.wheel(0, 2000)
    await page.wait_for_timeout(300)
    await expect(page.locator(".grid-row.placeholder")).to_have_count(0)
    stats = await page.evaluate("window.tablecast.table.stats")
    assert stats["rowsFetched"] <= 3000, stats
    head = await page.evaluate("document.querySelector('#grid-head').getBoundingClientRect().top")
    first = await page.evaluate("document.querySelector('.grid-row[data-row-id]').getBoundingClientRect().top")
    assert first >= head


async def test_sign_in_page_errors_in_words(make_server: MakeServer, console: Console) -> None:
    srv = make_server({**CONSOLE_SETTINGS, "AUTO_REGISTER": "false"})
    console.expected_http = [f"401 {srv.url}/api/login", f"409 {srv.url}/api/register"]
    page = await console.page()
    await page.goto(srv.url + "/")
    await expect(page.locator("#conn-status")).to_have_text("offline")
    await page.fill("#login-username", "nobody_here")
    await page.fill("#login-password", "secret-pw")
    await page.click("#login-submit")
    await expect(page.locator("#login-error")).to_have_text("Wrong username or password.")
    name = unique_user("reg")
    await page.fill("#login-username", name)
    await page.click("#register")
    await expect(page.locator("#conn-status")).to_have_text("connected")
    await page.click("#logout")
    await page.fill("#login-username", name)
    await page.fill("#login-password", "secret-pw")
    await page.click("#register")
    await expect(page.locator("#login-error")).to_contain_text("already taken")


async def test_same_origin_socketio_is_allowed_and_other_origins_still_follow_the_list(
    make_server: MakeServer,
) -> None:
    srv = make_server()
    async with aiohttp.ClientSession() as http:
        for origin, allowed in ((srv.url, True), ("http://evil.example", False), ("http://localhost:3000", True)):
            async with http.get(f"{srv.url}/socket.io/?EIO=4&transport=polling", headers={"Origin": origin}) as resp:
                assert (resp.status == 200) is allowed, (origin, resp.status)
                assert (resp.headers.get("Access-Control-Allow-Origin") == origin) is allowed
        async with http.get(f"{srv.url}/") as resp:
            assert resp.status == 200
            assert "Tablecast" in await resp.text()
        for path in ("/static/console.js", "/static/vendor/socket.io.min.js"):
            async with http.get(srv.url + path) as resp:
                assert resp.status == 200, path
        async with http.get(f"{srv.url}/static/../server/app.py") as resp:
            assert resp.status in (403, 404)


async def test_the_page_works_offline_with_no_outside_requests(make_server: MakeServer, console: Console) -> None:
    srv = make_server(CONSOLE_SETTINGS)
    page = await console.page()
    outside: list[str] = []

    async def route(r: Any) -> None:
        if r.request.url.startswith(srv.url):
            await r.continue_()
        else:
            outside.append(r.request.url)
            await r.abort()

    await page.route("**/*", route)
    await page.goto(srv.url + "/")
    await page.fill("#login-username", unique_user("offline"))
    await page.fill("#login-password", "secret-pw")
    await page.click("#login-submit")
    await expect(page.locator("#conn-status")).to_have_text("connected")
    await page.wait_for_function("() => Number(document.querySelector('#chart').dataset.bars) >= 0")
    assert not outside, outside


async def test_a_cut_off_user_resyncs_after_reconnecting_without_a_reload(
    make_server: MakeServer, console: Console
) -> None:
    srv = make_server(CONSOLE_SETTINGS)
    alice = unique_user("alice")
    a = await console.logged_in(srv.url, alice)
    b = await console.logged_in(srv.url, unique_user("bob"))
    context_b = b.context
    await b.evaluate("window.sameDocument = true")
    before = await cell(b, 5, "broker").inner_text()
    seq_before = await b.evaluate("window.tablecast.table.seq")

    console.offline_pages.add(b)
    await context_b.set_offline(True)
    await expect(b.locator("#conn-status")).to_have_text(re.compile(r"^(reconnecting|offline)$"))
    await b.wait_for_function("() => !window.tablecast.state.socket.connected")
    await b.evaluate(
        "window.failedAttempts = 0;"
        "window.tablecast.state.socket.io.on('reconnect_error', () => window.failedAttempts++)"
    )

    await row(a, 5).locator('[data-action="edit"]').click()
    editor = row(a, 5).locator('input[data-col="broker"]')
    await editor.fill("Changed While B Was Away")
    await editor.press("Enter")
    await expect(cell(a, 5, "broker")).to_have_text("Changed While B Was Away")
    await expect(row(a, 5).locator(".badge")).to_contain_text("cooldown")
    # B's socket is down, so nothing reached it: its view still shows the old value.
    await expect(cell(b, 5, "broker")).to_have_text(before)
    assert await b.evaluate("window.tablecast.table.seq") == seq_before

    await b.wait_for_function("() => window.failedAttempts > 0", timeout=10000)
    await expect(b.locator("#conn-status")).to_have_text("offline")
    await context_b.set_offline(False)
    await expect(b.locator("#conn-status")).to_have_text("connected", timeout=15000)
    console.offline_pages.discard(b)
    await expect(cell(b, 5, "broker")).to_have_text("Changed While B Was Away")
    await expect(row(b, 5).locator(".badge")).to_contain_text("cooldown")
    assert await b.evaluate("window.sameDocument") is True
    assert await b.evaluate("window.tablecast.table.seq") > seq_before


async def in_view_and_on_top(page: Page, selector: str) -> dict[str, float]:
    """The element's centre, after checking it lies inside the window and the grid and is what a click there hits."""
    box = await page.evaluate(
        """(selector) => {
            const el = document.querySelector(selector);
            const r = el.getBoundingClientRect();
            const g = document.querySelector('#grid').getBoundingClientRect();
            const x = r.left + r.width / 2, y = r.top + r.height / 2;
            const hit = document.elementFromPoint(x, y);
            return {x, y, left: r.left, right: r.right, width: r.width, gridLeft: g.left, gridRight: g.right,
                    vw: window.innerWidth, vh: window.innerHeight, onTop: hit === el || el.contains(hit)};
        }""",
        selector,
    )
    assert box["width"] > 0, box
    assert box["left"] >= 0, box
    assert box["right"] <= box["vw"], box
    assert box["gridLeft"] <= box["left"], box
    assert box["right"] <= box["gridRight"], box
    assert 0 <= box["y"] <= box["vh"], box
    assert box["onTop"], box
    return {"x": box["x"], "y": box["y"]}


async def badge_fits(page: Page, selector: str) -> None:
    assert await page.evaluate(
        "(s) => { const el = document.querySelector(s); return el.scrollWidth <= el.clientWidth; }", selector
    ), await page.locator(selector).inner_text()


async def test_row_actions_stay_in_reach_on_a_narrow_window(make_server: MakeServer, console: Console) -> None:
    srv = make_server(CONSOLE_SETTINGS)
    alice = unique_user("alice")
    a = await console.logged_in(srv.url, alice, width=420, height=800)
    watcher = await console.logged_in(srv.url, unique_user("carol"))
    last = await a.evaluate("window.tablecast.table.columns.at(-1)")
    assert last["type"] in ("integer", "number"), last

    # Scrolled all the way right, the id and the row's buttons are still in the window.
    await a.evaluate("document.querySelector('#grid').scrollLeft = 1e6")
    scrolled = await a.evaluate("document.querySelector('#grid').scrollLeft")
    assert scrolled > 200, scrolled
    await expect(cell(a, 2, last["name"])).to_be_in_viewport()
    await expect(row(a, 2).locator(".num").first).to_be_in_viewport()
    edit = await in_view_and_on_top(a, '.grid-row[data-row-id="2"] [data-action="edit"]')
    await in_view_and_on_top(a, '.grid-row[data-row-id="2"] [data-action="delete"]')

    # A plain mouse click there (no scrolling into view first) takes the lock.
    await a.mouse.click(edit["x"], edit["y"])
    await expect(row(watcher, 2).locator(".badge")).to_contain_text(f"locked by {alice}")
    await expect(row(a, 2).locator(".badge")).to_have_text(re.compile(r"^\d+:\d\d$"))
    # The first input has the focus, scrolled into view beside the pinned columns, not under them.
    await expect(row(a, 2).locator('input[data-col="user"]')).to_be_focused()
    await in_view_and_on_top(a, '.grid-row[data-row-id="2"] input[data-col="user"]')
    await a.evaluate("document.querySelector('#grid').scrollLeft = 1e6")
    await in_view_and_on_top(a, '.grid-row[data-row-id="2"] [data-action="save"]')
    await badge_fits(a, '.grid-row[data-row-id="2"] .badge')
    editor = row(a, 2).locator(f'input[data-col="{last["name"]}"]')
    await expect(editor).to_be_in_viewport()
    await editor.fill("7")
    await a.evaluate("window.scrollTo(0, 0)")
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    await a.screenshot(path=str(SCREENSHOTS / "console-narrow.png"))

    # Enter saves and unlocks: the other user sees the value and the cooldown.
    await editor.press("Enter")
    await expect(row(a, 2).locator("input")).to_have_count(0)
    await expect(cell(watcher, 2, last["name"])).to_have_text("7")
    await expect(row(watcher, 2).locator(".badge")).to_contain_text("cooldown")
    await expect(row(a, 2).locator(".badge")).to_contain_text(re.compile(r"\d s · cooldown"))
    await in_view_and_on_top(a, '.grid-row[data-row-id="2"] [data-action="edit"]')
