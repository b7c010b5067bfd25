"""Shared helpers for the live collectors: retries with backoff, a rate limiter, secret redaction.

- `retry(fn, ...)` calls `fn` until it succeeds, sleeping with exponential backoff and full jitter
  between attempts, but only for the exception types in `retry_on` (by default `TransientError`).
  Anything else propagates at once: a bad series id must not be retried five times.
- `RateLimiter(per_second)` spaces calls evenly across all threads of the process;
  `rate_limited_session` mounts it on a `requests.Session` so every request through it waits.
  `RateLimiter(per_second, shared=path)` spaces them across every process of the machine too: Dagster's
  multiprocess executor runs the SEC assets (filings, XBRL, universe, IPOs, news) and the EDGAR sensor in
  separate processes, whose own limiters would together go over the SEC's 10/s per client (it then blocks
  the IP for ~10 minutes). The next free slot (wall-clock seconds) lives in `path`, read and written under
  an exclusive `fcntl.flock`; `SEC_LIMITER` keeps it in $TENALI_HOME/ratelimits/sec.gov (`home_state_file`).
  Without TENALI_HOME (`dagster dev` started by hand) the file is in a private folder of the user's in the
  temp dir. Without fcntl (Windows), or when the file cannot be written, the limiter spaces calls within
  its process only; an unreadable file counts as "no slot taken".
- `redact(text, *secrets)` removes secrets (API keys) before text reaches a message or a log.

No network access happens here; the collectors in `live/` use these around their library calls.
"""

from __future__ import annotations

import logging
import math
import os
import random
import stat
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

try:
    import fcntl
except ImportError:  # Windows: no flock, so each process keeps its own spacing
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

T = TypeVar("T")


class TransientError(Exception):
    """A failure worth retrying: a rate limit, a timeout, a 5xx. `retry_after` is in seconds."""

    def __init__(self, message: str, *, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class RetriesExhausted(RuntimeError):
    """`retry` gave up; the last underlying error is the `__cause__`."""


def retry(
    fn: Callable[[], T],
    *,
    attempts: int = 5,
    base_delay: float = 1.0,
    max_delay: float = 60.0,
    retry_on: tuple[type[BaseException], ...] = (TransientError,),
    what: str = "request",
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call `fn()`; on an exception in `retry_on`, back off and try again, `attempts` times in all.

    The delay before try n+1 is uniform in [0, min(max_delay, base_delay * 2**(n-1))] ("full
    jitter"), raised to an exception's `retry_after` when it carries one (still capped at
    max_delay). After the last attempt a `RetriesExhausted` names `what` and the last error.
    """
    if attempts < 1:
        raise ValueError("attempts must be at least 1")
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except retry_on as exc:
            if attempt == attempts:
                raise RetriesExhausted(
                    f"{what} still failing after {attempts} attempts: {exc}. The service is "
                    "rate limiting or unavailable: wait and re-run, or lower the request rate."
                ) from exc
            delay = random.uniform(0, min(max_delay, base_delay * 2 ** (attempt - 1)))
            retry_after = getattr(exc, "retry_after", None)
            if retry_after:
                delay = min(max_delay, max(delay, float(retry_after)))
            log.warning("%s failed (%s); retry %d/%d in %.2fs", what, exc, attempt, attempts - 1, delay)
            sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


StatePath = str | os.PathLike | None


def home_state_file(name: str) -> Path | None:
    """Where the processes of this machine share a limiter's next slot: $TENALI_HOME/ratelimits/`name`. The
    `tenali` CLI sets TENALI_HOME, absolute, for every process it starts (run workers start in the instance's
    folder, where the settings' relative default "var" would name another file). Without it (`dagster dev`
    started by hand) a folder of this user's in the temp dir (`user_state_dir`); None where neither works."""
    home = os.environ.get("TENALI_HOME", "").strip()
    if home:
        return Path(home).expanduser().absolute() / "ratelimits" / name
    folder = user_state_dir()
    return folder / "ratelimits" / name if folder else None


def user_state_dir() -> Path | None:
    """<temp dir>/tenali-<uid>, made private (0700) if missing; None unless it is a real folder of this user's
    that no one else may write (the temp dir is shared: another user's folder, or a link planted there, must
    not steer our files), or on a system without user ids."""
    if not hasattr(os, "getuid"):
        return None
    folder = Path(tempfile.gettempdir()) / f"tenali-{os.getuid()}"
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        st = os.lstat(folder)
    except OSError:
        return None
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o022:
        return None
    return folder


class RateLimiter:
    """At most `per_second` calls per second across every thread that shares this object.

    Calls are spaced evenly (1/per_second apart) rather than allowed in bursts, which is what the
    SEC's "10 requests per second" asks for. `wait()` blocks until the caller's slot.

    `shared` (a file path, or a callable returning one or None, asked at each call) extends the spacing
    to every process using the same file: the next free slot, in wall-clock seconds, is kept there
    under an exclusive flock. Where that cannot work (no fcntl, no path, an unwritable file) calls are
    spaced within this process only, as without `shared`: a limiter never fails a collection.
    """

    def __init__(
        self,
        per_second: float,
        *,
        shared: StatePath | Callable[[], StatePath] = None,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        if per_second <= 0:
            raise ValueError("per_second must be positive")
        self.interval = 1.0 / per_second
        self.shared = shared
        self._clock = clock or time.monotonic
        self._wall = clock or time.time  # processes compare slots: monotonic clocks need not agree
        self._sleep = sleep
        self._next = float("-inf")
        self._lock = threading.Lock()
        self._warned: set[str] = set()
        # a stored slot further ahead than any queue of waiters could push it means the clock was set back
        self._horizon = 60.0 + 100 * self.interval

    def state_file(self) -> Path | None:
        """The file shared with other processes now, or None (per-process spacing)."""
        path = self.shared() if callable(self.shared) else self.shared
        return Path(path) if path and fcntl is not None else None

    def wait(self) -> None:
        with self._lock:
            path = self.state_file()
            taken = self._take_shared(path) if path is not None else None
            if taken is not None:
                now, slot = taken
            else:
                now = self._clock()
                slot = max(now, self._next)
                self._next = slot + self.interval
        if slot > now:
            self._sleep(slot - now)

    def _take_shared(self, path: Path) -> tuple[float, float] | None:
        """(now, this call's slot) from the state file, which then holds the slot after it; None on an OSError."""
        try:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            except FileNotFoundError:
                path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)  # released by close
                now = self._wall()
                try:
                    taken = float(os.read(fd, 64).decode("ascii").strip() or "-inf")
                except (UnicodeDecodeError, ValueError):  # corrupt: as if no slot were taken
                    taken = float("-inf")
                if not math.isfinite(taken) or taken > now + self._horizon:
                    taken = float("-inf")
                slot = max(now, taken)
                os.lseek(fd, 0, os.SEEK_SET)
                os.ftruncate(fd, 0)
                os.write(fd, repr(slot + self.interval).encode("ascii"))
                return now, slot
            finally:
                os.close(fd)
        except OSError as exc:
            if str(path) not in self._warned:
                self._warned.add(str(path))
                log.warning("rate limit state %s is unusable (%s): spacing calls within this process only, so "
                            "parallel processes may together exceed the limit; make TENALI_HOME writable",
                            path, exc.strerror or exc)
            return None

    def __enter__(self) -> RateLimiter:
        self.wait()
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None


# One limiter per rate-limited host, shared by every session in the process and, through a file under
# TENALI_HOME, by every process of the machine (the SEC's 10/s is per client: per IP address).
SEC_LIMITER = RateLimiter(10, shared=lambda: home_state_file("sec.gov"))
_HOST_LIMITERS: dict[str, RateLimiter] = {"sec.gov": SEC_LIMITER}


def limiter_for_url(url: str) -> RateLimiter | None:
    """The limiter for `url`'s host (sec.gov and its subdomains), if it has one."""
    host = (urlsplit(url).hostname or "").lower()
    for domain, limiter in _HOST_LIMITERS.items():
        if host == domain or host.endswith("." + domain):
            return limiter
    return None


class _RateLimitedAdapter(HTTPAdapter):
    def __init__(self, limiter: RateLimiter | None, **kwargs):
        self.limiter = limiter
        super().__init__(**kwargs)

    def send(self, request, *args, **kwargs):  # type: ignore[override]
        limiter = self.limiter or limiter_for_url(request.url)
        if limiter is not None:
            limiter.wait()
        return super().send(request, *args, **kwargs)


def rate_limited_session(
    limiter: RateLimiter | None = None, session: requests.Session | None = None
) -> requests.Session:
    """A session whose every request waits on `limiter` (default: the host's limiter, if any)."""
    session = session or requests.Session()
    adapter = _RateLimitedAdapter(limiter)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def redact(text: str, *secrets: str | None) -> str:
    """`text` with every non-empty secret replaced by '***'."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


# --- JSON APIs (universe, XBRL, DefiLlama, CoinGecko) ------------------------------------------


class SourceBlocked(RuntimeError):
    """The site refused automated access (403 or a bot wall): retrying will not help."""


class MalformedResponse(ValueError):
    """The site answered 200 with a body that is not the documented shape."""


class PartialFetchError(RuntimeError):
    """Some items (tickers, coins, chains) failed; `partial` holds what the others returned.

    Raised at the end of a fetch so that one bad item fails only itself: the asset writes
    `partial` and then fails with this message, which names every failed item and its cause.
    """

    def __init__(self, what: str, failures: dict[str, str], partial=None):
        self.failures = dict(failures)
        self.partial = partial
        listed = "; ".join(f"{k}: {v}" for k, v in sorted(self.failures.items()))
        super().__init__(f"{what}: {len(self.failures)} failed ({listed}); the others were kept")


def retry_after_seconds(value: object) -> float | None:
    """Seconds to wait from a Retry-After header, in either form RFC 9110 allows: delay-seconds
    ("120") or an HTTP-date ("Wed, 21 Oct 2015 07:28:00 GMT", which SEC and CDNs send); None when
    absent or unreadable, so that plain backoff applies."""
    text = str(value or "").strip()
    if text.isdigit():
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # "-0000" or no zone: HTTP-dates are GMT
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def get_or_transient(session, url: str, *, site: str, shown: str, timeout: float, params: dict | None = None,
                     headers: dict | None = None, secrets: tuple[str | None, ...] = ()) -> requests.Response:
    """One GET whose network errors, 429 and 5xx raise `TransientError` (with Retry-After) for `retry`;
    any other answer is returned for the caller to judge. `shown` is the URL (or a name) for messages."""
    try:
        resp = session.get(url, params=params, headers=headers, timeout=timeout)
    except (requests.ConnectionError, requests.Timeout) as exc:
        raise TransientError(f"could not reach {site} ({shown}): {redact(str(exc), *secrets)}") from None
    except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError) as exc:
        # the connection dropped mid-body (a truncated response): as transient as a refused connection
        raise TransientError(f"{site} broke off its answer for {shown}: {redact(str(exc), *secrets)}") from None
    if resp.status_code == 429 or resp.status_code >= 500:
        raise TransientError(f"{site} answered HTTP {resp.status_code} for {shown}",
                             retry_after=retry_after_seconds(resp.headers.get("Retry-After")))
    return resp


def get_checked(session, url: str, *, site: str, shown: str, timeout: float, blocked: str,
                params: dict | None = None, headers: dict | None = None, secrets: tuple[str | None, ...] = (),
                not_found: type[Exception] | None = None) -> requests.Response:
    """One GET with the status classes every JSON/HTML source shares: network errors, 429 and 5xx raise
    `TransientError` (with Retry-After), 403 raises `SourceBlocked` with `blocked` (what to do about it),
    404 raises `not_found` when given, other 4xx `requests.HTTPError`. `shown` is the URL for messages."""
    resp = get_or_transient(session, url, site=site, shown=shown, timeout=timeout, params=params, headers=headers,
                            secrets=secrets)
    if resp.status_code == 403:
        raise SourceBlocked(f"{site} refused automated access (HTTP 403) to {shown}. {blocked}")
    if resp.status_code == 404 and not_found is not None:
        raise not_found(f"{site} has no {shown} (HTTP 404)")
    if resp.status_code >= 400:
        raise requests.HTTPError(f"{site} answered HTTP {resp.status_code} {resp.reason} for {shown}", response=resp)
    return resp


def fetch_json(
    session: requests.Session,
    url: str,
    *,
    site: str,
    off_setting: str,
    params: dict | None = None,
    headers: dict | None = None,
    timeout: float = 30.0,
    attempts: int = 4,
    base_delay: float = 1.0,
    sleep: Callable[[float], None] = time.sleep,
    secrets: tuple[str | None, ...] = (),
):
    """GET `url` and decode its JSON body, retrying 429, 5xx and network errors with backoff.

    A 403 (or an HTML page where JSON was expected, which is how bot walls answer) raises
    `SourceBlocked` naming `site` and `off_setting`, the setting that turns the source off; other
    4xx raise `requests.HTTPError`; an undecodable body raises `MalformedResponse`. Secrets
    (API keys in the URL) are redacted from every message.
    """
    shown = redact(url, *secrets)

    def attempt():
        resp = get_checked(session, url, site=site, shown=shown, timeout=timeout, params=params, headers=headers,
                           secrets=secrets, blocked="The site may block this network or User-Agent; to run without "
                                                    f"it, turn the source off with {off_setting}.")
        try:
            return resp.json()
        except ValueError:
            head = resp.text[:200].lower()
            if "<html" in head or "captcha" in head or "cloudflare" in head:
                raise SourceBlocked(
                    f"{site} answered an HTML page instead of JSON for {shown} (a bot wall); to run "
                    f"without it, turn the source off with {off_setting}."
                ) from None
            raise MalformedResponse(f"{site} answered a body that is not JSON for {shown}: {resp.text[:120]!r}") from None

    return retry(attempt, attempts=attempts, base_delay=base_delay, what=f"{site} {shown}", sleep=sleep)
