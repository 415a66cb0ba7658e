"""End to end in a real browser: Playwright drives Debian's headless Chromium (never a downloaded one).

A simulated race (the dataflow's own race logic, written with its Redis sink) is fed into Redis
progressively while the page is open: the tower must show 20 rows that reorder, the map's car dots
must move, the hero banner must appear at the flag. Screenshots go to ``test-artifacts/``.

Needs the ``playwright`` package and ``/usr/bin/chromium`` (Debian package ``chromium``); skipped
with the reason otherwise.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis

from dataflows.connectors.redis_sink import RedisWriter
from infra.bench.harness import serve_in_thread
from schemas.model import RaceEvent, Session
from schemas.redis_layout import RACES_KEY, BoardUpdate
from schemas.settings import Settings
from serving.app import ServingOptions, create_app
from serving.replay import race_outputs, session_outputs, write_session

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
RACE_SECONDS = 14.0  # the whole simulated race is played in about this much wall time

if importlib.util.find_spec("playwright") is None:
    pytest.skip("the playwright package is not installed (pip install playwright; no browser download needed)",
                allow_module_level=True)
if not CHROMIUM.exists():
    pytest.skip("/usr/bin/chromium is missing (apt-get install chromium)", allow_module_level=True)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


def _snapshot(page: Any) -> dict[str, Any]:
    return page.evaluate("""() => ({
        order: [...document.querySelectorAll('#tower tbody tr')].map(tr => tr.dataset.code),
        dots: Object.fromEntries([...document.querySelectorAll('#map g.car')].map(
            g => [g.dataset.driver, g.getAttribute('transform')])),
        hero: document.querySelector('#hero').hidden ? null : document.querySelector('#hero').dataset.code,
        conn: document.querySelector('#conn .label').textContent,
        lap: document.querySelector('#lap-counter').textContent,
        feed: document.querySelectorAll('#feed li').length,
    })""")


def test_live_race_in_the_browser(browser: Any, redis_url: str, redis_client: redis.Redis,
                                  unique_race_id: str) -> None:
    race_id = unique_race_id
    session, outputs = race_outputs(race_id, seed=11, laps=3, strategy=True)
    final = [o.item.board for o in outputs if isinstance(o.item, BoardUpdate)][-1]
    assert final.hero is not None
    follow = final.rows[5].code
    speed = outputs[-1].ts_ms / 1000 / RACE_SECONDS

    writer = RedisWriter(redis_url)
    app = create_app(Settings(redis_url=redis_url), ServingOptions(rate_limit_per_s=0))  # type: ignore[call-arg]
    errors: list[str] = []
    try:
        with serve_in_thread(app) as url:
            write_session(writer, session)
            first = next(i for i, o in enumerate(outputs) if not isinstance(o.item, RaceEvent))
            writer.write([o.item for o in outputs[: first + 1]])

            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            page.goto(f"{url}/?race={race_id}&follow={follow}")
            page.wait_for_selector("#tower tbody tr:nth-child(20)", timeout=10_000)
            page.wait_for_function("document.querySelectorAll('#map g.car').length === 20", timeout=10_000)
            assert page.locator("#tower tbody tr.followed").get_attribute("data-code") == follow

            samples = [_snapshot(page)]
            t0 = time.perf_counter()
            base = outputs[first].ts_ms
            i = first + 1
            next_sample = 0.0
            mid_shot = False
            ARTIFACTS.mkdir(exist_ok=True)
            while i < len(outputs):
                due = (outputs[i].ts_ms - base) / 1000 / speed
                now = time.perf_counter() - t0
                if now >= due:
                    j = i
                    while j < len(outputs) and outputs[j].ts_ms == outputs[i].ts_ms:
                        j += 1
                    writer.write([o.item for o in outputs[i:j]])
                    i = j
                    continue
                if now >= next_sample:
                    samples.append(_snapshot(page))
                    next_sample = now + 0.25
                    if not mid_shot and i > len(outputs) * 0.6:
                        mid_shot = True
                        page.screenshot(path=str(ARTIFACTS / "leaderboard-midrace.png"))
                time.sleep(min(0.02, due - now))
            page.wait_for_selector("#hero:not([hidden])", timeout=10_000)
            page.wait_for_timeout(300)
            samples.append(_snapshot(page))

            orders = [tuple(s["order"]) for s in samples if len(s["order"]) == 20]
            assert orders and all(len(set(o)) == 20 for o in orders)
            assert len(set(orders)) >= 3, "the tower never reordered"
            assert orders[-1] == tuple(r.code for r in final.rows)

            moved = sum(1 for n, pos in samples[-1]["dots"].items() if pos != samples[1]["dots"].get(n))
            assert moved >= 10, f"only {moved} car dots moved on the map"
            assert samples[-1]["hero"] == final.hero.code
            assert samples[-1]["conn"] == "live"
            assert samples[-1]["lap"] == "LAP 3/3"
            assert samples[-1]["feed"] > 5
            # the strategy panel holds the calls made after lap 2 (the last before the flag)
            page.wait_for_function("document.querySelectorAll('#strategy tbody tr').length >= 18", timeout=10_000)
            assert page.inner_text("#strategy-lap") == "after lap 2"

            page.screenshot(path=str(ARTIFACTS / "leaderboard.png"), full_page=True)

            # follow another driver by clicking their row: the URL and the map follow
            other = final.rows[0].code
            page.click(f"#tower tbody tr[data-code='{other}']")
            assert f"follow={other}" in page.url
            assert page.locator("#map g.car.followed").count() == 1

            phone = browser.new_page(viewport={"width": 390, "height": 844}, device_scale_factor=2)
            phone.goto(f"{url}/?race={race_id}")
            phone.wait_for_selector("#tower tbody tr:nth-child(20)", timeout=10_000)
            phone.wait_for_selector("#hero:not([hidden])", timeout=10_000)
            width = phone.evaluate("document.documentElement.scrollWidth")
            assert width <= 390 + 1, f"the phone layout overflows horizontally ({width}px)"
            phone.screenshot(path=str(ARTIFACTS / "leaderboard-phone.png"), full_page=False)
            page.close()
            phone.close()
    finally:
        redis_client.hdel(RACES_KEY, race_id)
        writer.close()
    assert not errors, errors


def test_a_page_opened_mid_race_charts_the_laps_already_run(browser: Any, redis_url: str, redis_client: redis.Redis,
                                                           postgres_url: str, unique_race_id: str) -> None:
    """The live tower only knows the current lap; the chart's past laps come from the history store."""
    import psycopg
    from psycopg.conninfo import make_conninfo

    from dataflows.connectors.pg_sink import PgWriter
    from dataflows.race.driver import DriverUpdate
    from infra.migrate import migrate

    race_id = unique_race_id
    session, outputs = race_outputs(race_id, seed=5, laps=8, driver_laps=True)
    cut = next(o.ts_ms for o in outputs if isinstance(o.item, BoardUpdate) and o.item.board.lap >= 6)
    done = [o.item for o in outputs if o.ts_ms <= cut]
    schema = f"t_{race_id.replace('-', '_')}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    conninfo = make_conninfo(postgres_url, options=f"-csearch_path={schema}")
    writer = RedisWriter(redis_url)
    errors: list[str] = []
    try:
        migrate(conninfo)
        pg = PgWriter(conninfo)
        pg.write(done)
        pg.close()
        write_session(writer, session)
        writer.write([x for x in done if not isinstance(x, DriverUpdate)])
        app = create_app(Settings(redis_url=redis_url, database_url=conninfo),  # type: ignore[call-arg]
                         ServingOptions(rate_limit_per_s=0))
        with serve_in_thread(app) as url:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{url}/?race={race_id}")
            page.wait_for_selector("#tower tbody tr:nth-child(20)", timeout=10_000)
            page.wait_for_function("(document.querySelector('#chart').dataset.laps || '').startsWith('1-')",
                                   timeout=10_000)
            page.click("button[data-mode='gap']")  # the gaps too
            page.wait_for_function("(document.querySelector('#chart').dataset.laps || '').startsWith('1-')",
                                   timeout=10_000)
            page.close()
    finally:
        redis_client.hdel(RACES_KEY, race_id)
        writer.close()
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
    assert not errors, errors


def test_swagger_ui_runs_under_its_content_security_policy(browser: Any, redis_url: str) -> None:
    """/docs is Swagger UI served from this server: under the CSP it renders the API, and the browser
    reports no violation (its one inline start-up script is allowed by hash)."""
    pytest.importorskip("fastapi_offline", reason="fastapi-offline not installed: /docs uses FastAPI's CDN")
    app = create_app(Settings(redis_url=redis_url), ServingOptions(rate_limit_per_s=0))  # type: ignore[call-arg]
    messages: list[str] = []
    with serve_in_thread(app) as url:
        page = browser.new_page()
        page.on("pageerror", lambda exc: messages.append(str(exc)))
        page.on("console", lambda msg: messages.append(msg.text) if msg.type == "error" else None)
        response = page.goto(f"{url}/docs")
        assert "sha256-" in response.headers["content-security-policy"]
        page.wait_for_selector(".swagger-ui .opblock", timeout=15_000)  # the operations, from /openapi.json
        title = page.text_content(".swagger-ui .info .title") or ""
        page.close()
    assert "racewire" in title
    assert not messages, messages


@contextmanager
def _opened(browser: Any, redis_url: str, redis_client: redis.Redis, session: Session,
            items: list[Any]) -> Iterator[tuple[Any, RedisWriter]]:
    """The page of ``session``'s race, served from Redis holding ``items`` (the dataflow's Redis
    outputs), once its tower has 20 rows; no page error or console error allowed."""
    race_id = session.race_id
    writer = RedisWriter(redis_url)
    app = create_app(Settings(redis_url=redis_url), ServingOptions(rate_limit_per_s=0))  # type: ignore[call-arg]
    errors: list[str] = []
    ARTIFACTS.mkdir(exist_ok=True)
    try:
        with serve_in_thread(app) as url:
            write_session(writer, session)
            writer.write(items)
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            page.goto(f"{url}/?race={race_id}")
            page.wait_for_selector("#tower tbody tr:nth-child(20)", timeout=10_000)
            yield page, writer
            page.close()
    finally:
        redis_client.hdel(RACES_KEY, race_id)
        writer.close()
    assert not errors, errors


def _capture_outputs(shared_data: Path, name: str, race_id: str) -> tuple[Session, list[Any]]:
    """A recording converted as a live run would, through the dataflow's logic: its session and outputs."""
    from simulator.sources.incremental import convert_incrementally
    from simulator.sources.livetiming import parse_recording

    path = shared_data / "livetiming" / "recordings" / f"{name}.txt"
    records = convert_incrementally(parse_recording(path.read_text(encoding="utf-8-sig").splitlines()), race_id)
    return next(r for r in records if isinstance(r, Session)), session_outputs(race_id, records)


def _qualifying_page(page: Any) -> dict[str, Any]:
    return page.evaluate("""() => {
      const shown = (sel) => document.querySelector(sel).hidden ? null : document.querySelector(sel).textContent;
      const rows = [...document.querySelectorAll('#tower tbody tr')];
      return {
        kind: shown('#session-kind'),
        part: document.querySelector('#lap-counter').textContent,
        clock: shown('#clock'),
        clockStopped: document.querySelector('#clock').classList.contains('stopped'),
        order: rows.map(tr => tr.dataset.code),
        out: rows.map(tr => tr.querySelector('.status-OUT')?.textContent || null),
        zone: [...document.querySelectorAll('#tower tbody tr.ko-zone')].map(tr => Number(tr.dataset.position)),
        cut: [...document.querySelectorAll('#tower tbody tr.cut-line')].map(tr => Number(tr.dataset.position)),
      };
    }""")


def test_a_qualifying_session_in_the_browser(browser: Any, redis_url: str, redis_client: redis.Redis,
                                             shared_data: Path, unique_race_id: str) -> None:
    """The 2025 Dutch qualifying capture through the dataflow's logic, shown in Q2 and at its end:
    the part and the clock (running down in Q2), the knock-out zone below the cut, the cars
    knocked out in Q1 below with "OUT Q1", and the final order with Q1's and Q2's knock-outs."""
    session, outputs = _capture_outputs(shared_data, "2025_dutch_qualifying", unique_race_id)
    boards = [o for o in outputs if isinstance(o.item, BoardUpdate)]
    # ten minutes into Q2
    mid = next(i for i, o in enumerate(outputs) if isinstance(o.item, BoardUpdate) and o.item.board.part == 2
               and o.item.board.clock_running and o.item.board.clock_remaining_ms is not None
               and o.item.board.ts_ms - o.item.board.clock_ts_ms > 600_000)
    at_mid = outputs[mid].item.board
    final = boards[-1].item.board
    with _opened(browser, redis_url, redis_client, session, [o.item for o in outputs[: mid + 1]]) as (page, writer):
        page.wait_for_selector("#clock:not([hidden])", timeout=10_000)
        first = _qualifying_page(page)
        page.wait_for_timeout(1500)
        q2 = _qualifying_page(page)
        page.screenshot(path=str(ARTIFACTS / "qualifying-q2.png"), full_page=True)
        assert q2["kind"] == "QUALIFYING" and q2["part"] == "Q2"
        assert q2["order"] == [r.code for r in at_mid.rows]
        assert q2["out"] == [None] * 15 + ["OUT Q1"] * 5
        assert q2["cut"] == [10] and q2["zone"] == list(range(11, 16))
        assert not q2["clockStopped"] and first["clock"] != q2["clock"], (first["clock"], q2["clock"])

        writer.write([o.item for o in outputs[mid + 1:]])
        # (polled from here: the page's Content Security Policy forbids wait_for_function's eval)
        deadline = time.monotonic() + 10
        end = _qualifying_page(page)
        while (end["part"], end["order"][:1], end["clockStopped"]) != ("Q3", [final.rows[0].code], True) \
                and time.monotonic() < deadline:
            page.wait_for_timeout(100)
            end = _qualifying_page(page)
        page.screenshot(path=str(ARTIFACTS / "qualifying-final.png"), full_page=True)
        assert end["order"] == [r.code for r in final.rows]
        assert end["out"] == [None] * 10 + ["OUT Q2"] * 5 + ["OUT Q1"] * 5
        assert end["zone"] == [] and end["cut"] == [] and end["clock"] == "0:00"
        assert page.locator('.strategy-panel').is_hidden()


def test_a_real_race_with_its_weather_race_control_and_team_radio(browser: Any, redis_url: str,
                                                                  redis_client: redis.Redis, shared_data: Path,
                                                                  unique_race_id: str) -> None:
    """The 2024 São Paulo sprint capture through the dataflow's logic, opened at the end: the
    weather strip shows the session's last measurement, the race-control panel race control's
    messages (flags, its own messages, the start and the flag), the events feed the team-radio clips."""
    session, outputs = _capture_outputs(shared_data, "2024_brazil_sprint", unique_race_id)
    final = [o.item.board for o in outputs if isinstance(o.item, BoardUpdate)][-1]
    assert final.weather is not None
    messages = [o.item.message for o in outputs if isinstance(o.item, RaceEvent) and o.item.type == "RACE_CONTROL"]
    with _opened(browser, redis_url, redis_client, session, [o.item for o in outputs]) as (page, _writer):
        page.wait_for_selector("#weather:not([hidden])", timeout=10_000)
        page.wait_for_selector("#rc li.RACE_CONTROL", timeout=10_000)
        shown = page.evaluate("""() => ({
            weather: Object.fromEntries([...document.querySelectorAll('#weather dd')].map(
                d => [d.dataset.k, d.textContent])),
            rc: [...document.querySelectorAll('#rc li')].map(
                li => [li.className, li.querySelector('.text').textContent]),
            radio: document.querySelectorAll('#feed li.TEAM_RADIO').length,
            flag: document.querySelector('#flag').textContent,
        })""")
        page.screenshot(path=str(ARTIFACTS / "race-weather-race-control.png"), full_page=True)
    w = final.weather
    assert shown["weather"]["air"] == f"{w.air_temp_c:.1f}°C"
    assert shown["weather"]["track"] == f"{w.track_temp_c:.1f}°C"
    assert shown["weather"]["rain"] == ("RAIN" if w.rainfall else "dry")
    rc_texts = [text for kind, text in shown["rc"] if kind == "RACE_CONTROL"]
    assert set(rc_texts) <= set(messages) and "DRS ENABLED" in rc_texts
    kinds = {kind for kind, _text in shown["rc"]}
    assert {"FLAG", "CHEQUERED_FLAG", "RACE_START"} <= kinds
    assert shown["radio"] > 0 and shown["flag"] == "CHEQUERED"
