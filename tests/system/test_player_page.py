"""The status page in a real browser (Debian's Chromium driven by Playwright) against the
running stack: log in, watch a call complete without reloading, play it (from the object
store the player redirects to), seek from the transcript, recover a refused playback URL,
retry a failed stage, sign out. Screenshots go to test-artifacts/."""

from __future__ import annotations

import asyncio
import secrets
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, Response, Route, expect, sync_playwright

from shared.call_keys import Envelopes
from shared.events import Lead, SummaryReady
from shared.kafka.producer import EventProducer
from shared.settings import Settings
from tests.support import events as factories
from tests.support.stack import RunningStack

pytestmark = pytest.mark.stack

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--autoplay-policy=no-user-gesture-required",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium is needed: apt-get install chromium (.ci/run installs it)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Browser, stack: RunningStack) -> Iterator[Page]:
    context = browser.new_context(base_url=stack.player)
    opened = context.new_page()
    opened.goto("/")
    expect(opened).to_have_url(f"{stack.player}/login")
    key = stack.api.headers["Authorization"].removeprefix("Bearer ")
    opened.fill("#api_key", key)
    opened.click("button[type=submit]")
    expect(opened).to_have_url(f"{stack.player}/")
    yield opened
    context.close()


def wait_for_audio_metadata(page: Page) -> None:
    """The detail pane (and its <audio>) renders after the call's detail arrives, so wait for the
    element before asking it for its metadata: a predicate reading a missing element throws."""
    expect(page.locator("audio")).to_be_attached(timeout=15_000)
    page.wait_for_function(
        "document.querySelector('audio')?.readyState >= 1", timeout=15_000, polling=100
    )


def wait_for_audio_at(page: Page, seconds: float) -> None:
    page.wait_for_function(
        f"Math.abs((document.querySelector('audio')?.currentTime ?? -9) - {seconds}) < 1.5",
        timeout=10_000,
    )


def screenshot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / f"{name}.png", full_page=True)


def test_a_call_completes_live_plays_and_seeks_from_the_transcript(
    page: Page, stack: RunningStack
) -> None:
    call_sid = stack.place_call("plumber_boston", media_delay_seconds=4)
    row = page.locator(f"tr[data-call='{call_sid}']")
    expect(row).to_be_visible(timeout=15_000)
    expect(row.locator("td[data-stage=recording] .badge")).to_have_attribute(
        "data-status", "processing", timeout=10_000
    )
    screenshot(page, "call-processing")
    expect(row.locator("td[data-stage=summary] .badge")).to_have_attribute(
        "data-status", "completed", timeout=60_000
    )
    row.click()
    expect(page.locator("#summary")).to_contain_text("Plumbing")
    lines = page.locator("#transcript p[data-start]")
    expect(lines.first).to_contain_text("kitchen", timeout=10_000)
    audio = page.locator("audio")
    wait_for_audio_metadata(page)
    duration = audio.evaluate("a => a.duration")
    assert duration == pytest.approx(13.07, abs=0.1)
    last = lines.last
    start = float(last.get_attribute("data-start") or "0")
    assert start > 5
    last.click()
    wait_for_audio_at(page, start)
    expect(last).to_have_class("current", timeout=5_000)
    screenshot(page, "call-playing")


def test_the_page_waits_while_the_recording_is_redacted_then_plays_it(
    page: Page, stack: RunningStack
) -> None:
    call_sid = stack.place_call("locksmith_chicago_card")  # half a minute to transcribe
    row = page.locator(f"tr[data-call='{call_sid}']")
    expect(row.locator("td[data-stage=recording] .badge")).to_have_attribute(
        "data-status", "completed", timeout=30_000
    )
    row.click()
    expect(page.locator("#audio-state")).to_have_text("Recording is being redacted…", timeout=5_000)
    expect(row.locator("td[data-stage=transcript] .badge")).to_have_attribute(
        "data-status", "completed", timeout=60_000
    )
    wait_for_audio_metadata(page)
    expect(page.locator("#audio-state")).to_have_text("")
    assert page.locator("audio").evaluate("a => a.duration") > 20


def test_an_expired_playback_url_is_asked_for_again(page: Page, stack: RunningStack) -> None:
    """The player redirects the audio to a short-lived S3 URL. Here its first answer is a
    redirect to an expired one, which S3 refuses: the page asks the player again (once), is
    redirected to a fresh URL and plays from the object store."""
    call_sid = stack.place_call("electrician_denver")
    call = stack.wait_for_call(call_sid)
    assert call["recording_status"] == "completed"
    expired = stack.expired_recording_url(call["recording_key"])
    audio_requests: list[str] = []

    def expired_first(route: Route) -> None:
        if route.request.method != "GET":
            route.continue_()  # the page's HEAD
            return
        audio_requests.append(route.request.url)
        if len(audio_requests) == 1:
            route.fulfill(status=307, headers={"Location": expired, "Cache-Control": "no-store"})
        else:
            route.continue_()

    page.route(f"**/api/recordings/{call_sid}/file", expired_first)
    s3_answers: list[int] = []

    def from_s3(response: Response) -> None:
        if response.url.startswith(stack.env["CALLPIPE_S3_ENDPOINT_URL"]):
            s3_answers.append(response.status)

    page.on("response", from_s3)
    page.locator(f"tr[data-call='{call_sid}']").click()
    wait_for_audio_metadata(page)
    assert len(audio_requests) == 2  # the expired redirect, then the player once more
    assert s3_answers[-1] in (200, 206)
    assert page.locator("audio").evaluate("a => a.error") is None
    assert page.locator("audio").evaluate("a => a.duration") > 5


def test_a_failed_stage_is_retried_from_the_page(page: Page, stack: RunningStack) -> None:
    call_sid = stack.place_call("electrician_denver", media_error_status=403, media_error_count=1)
    row = page.locator(f"tr[data-call='{call_sid}']")
    expect(row.locator("td[data-stage=recording] .badge")).to_have_attribute(
        "data-status", "failed", timeout=30_000
    )
    row.click()
    expect(page.locator("#detail .error")).to_contain_text("403")
    screenshot(page, "call-failed")
    page.click("button[data-retry=recording]")
    expect(row.locator("td[data-stage=summary] .badge")).to_have_attribute(
        "data-status", "completed", timeout=60_000
    )
    expect(page.locator("#summary")).to_contain_text("Electric", timeout=10_000)
    screenshot(page, "call-retried")


def test_the_lead_shows_its_evidence_and_a_click_plays_it(page: Page, stack: RunningStack) -> None:
    call_sid = stack.place_call("plumber_boston")
    row = page.locator(f"tr[data-call='{call_sid}']")
    expect(row.locator("td[data-stage=summary] .badge")).to_have_attribute(
        "data-status", "completed", timeout=60_000
    )
    row.click()
    city = page.locator("#lead a.evidence[data-field=city]")
    expect(city).to_contain_text("Boston")
    wait_for_audio_metadata(page)
    start = float(city.get_attribute("data-start") or "0")
    assert start > 3  # the caller names the city in their second turn
    city.click()
    wait_for_audio_at(page, start)
    screenshot(page, "call-lead-evidence")


def test_hebrew_text_reads_right_to_left(page: Page, stack: RunningStack) -> None:
    """A Hebrew-speaking business's summary and lead, sent through Kafka as the extractor
    would, display right to left while the page's own text stays left to right."""
    call_sid = "CA" + secrets.token_hex(16)
    started = factories.call_started(
        call_sid,
        Settings().business.default_id,
        from_number="+972501234567",
        to_number="+97235551234",
    )
    summary = started.caused(
        SummaryReady,
        "summary.ready",
        outcome="extracted",
        summary="הלקוח מבקש אינסטלטור בתל אביב, נזילה במטבח.",
        lead=Lead(service="אינסטלציה", city="תל אביב", confidence=0.8),
        extractor="test",
    )

    async def publish() -> None:
        # The stack's own database and wrapping key: the player opens what it seals.
        producer = EventProducer(stack.settings.kafka, Envelopes.of(stack.settings))
        await producer.start()
        try:
            for event in (started, summary):
                await producer.publish(event)
        finally:
            await producer.stop()

    with ThreadPoolExecutor(1) as thread:  # Playwright's sync API owns this thread's loop
        thread.submit(asyncio.run, publish()).result()
    row = page.locator(f"tr[data-call='{call_sid}']")
    expect(row).to_be_visible(timeout=15_000)
    row.click()
    text = page.locator("#summary")
    expect(text).to_contain_text("אינסטלטור")
    assert text.evaluate("e => getComputedStyle(e).direction") == "rtl"
    city = page.locator("#lead td", has_text="תל אביב")
    assert city.evaluate("e => getComputedStyle(e).direction") == "rtl"
    assert page.locator("#detail h2").evaluate("e => getComputedStyle(e).direction") == "ltr"
    screenshot(page, "call-hebrew")


DEFAULT_DATA_SETTINGS = {
    "redact": ["card"],
    "audio_retention_days": None,
    "call_retention_days": None,
    "delete_from_twilio": False,
}


def test_the_data_settings_are_shown_and_saved_from_the_page(
    page: Page, stack: RunningStack
) -> None:
    stack.api.put("/api/settings", json=DEFAULT_DATA_SETTINGS)  # whatever earlier tests saved
    page.click("a:has-text('Data settings')")
    expect(page).to_have_url(f"{stack.player}/settings")
    card = page.locator("input[value=card]")
    expect(card).to_be_checked()
    expect(card).to_be_disabled()
    save = page.locator("#data-settings button[type=submit]")
    try:
        page.check("input[value=phone]")
        page.fill("#audio_retention_days", "90")
        page.fill("#call_retention_days", "30")
        save.click()
        expect(page.locator("#problems")).to_contain_text(
            "calls cannot be kept for less time than their audio"
        )
        assert stack.api.get("/api/settings").json() == DEFAULT_DATA_SETTINGS
        screenshot(page, "data-settings-refused")

        page.fill("#call_retention_days", "365")
        page.check("#delete_from_twilio")
        save.click()
        expect(page.locator("#saved")).to_have_text("Saved.")
        expect(page.locator("#problems")).to_be_empty()
        saved = {
            "redact": ["card", "phone"],
            "audio_retention_days": 90,
            "call_retention_days": 365,
            "delete_from_twilio": True,
        }
        assert stack.api.get("/api/settings").json() == saved
        page.reload()
        expect(page.locator("input[value=phone]")).to_be_checked()
        expect(page.locator("input[value=email]")).not_to_be_checked()
        expect(page.locator("#audio_retention_days")).to_have_value("90")
        expect(page.locator("#call_retention_days")).to_have_value("365")
        expect(page.locator("#delete_from_twilio")).to_be_checked()
        screenshot(page, "data-settings-saved")
    finally:  # the stack's other tests run with the demo business's defaults
        stack.api.put("/api/settings", json=DEFAULT_DATA_SETTINGS)


def test_signing_out_ends_the_session_for_every_copy_of_its_cookie(
    page: Page, stack: RunningStack
) -> None:
    cookie = {c["name"]: c["value"] for c in page.context.cookies()}["callpipe_session"]
    copy = httpx.Client(base_url=stack.player, cookies={"callpipe_session": cookie}, timeout=10)
    assert copy.get("/api/calls").status_code == 200
    page.click("button:has-text('Sign out')")
    expect(page).to_have_url(f"{stack.player}/login")
    assert copy.get("/api/calls").status_code == 401
    page.goto("/")
    expect(page).to_have_url(f"{stack.player}/login")
