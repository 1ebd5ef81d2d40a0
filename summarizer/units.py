"""The nightly job's files: the crontab lines and the systemd service and timer, as text.

``summarizer schedule --print-cron`` and ``--print-systemd`` print them for this installation (its
``summarizer`` executable and the config file in use); ``python -m summarizer.render`` writes them
with the default paths into ``scripts/`` of a checkout. The times come from ``[schedule]``: the
crontab line takes ``full`` and ``changed`` as they are, the timer's ``OnCalendar`` needs ``full`` to be
a fixed time of day (``M H * * *``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .config import Config

INSTALLED = "/opt/summarizer/venv/bin/summarizer"
CONFIG = "/etc/summarizer/config.ini"
METRICS = "/var/lib/prometheus/node-exporter/summarizer.prom"
DAILY = re.compile(r"^(\d{1,2})\s+(\d{1,2})\s+\*\s+\*\s+\*$")


@dataclass(frozen=True)
class Paths:
    executable: str = INSTALLED
    config: str = CONFIG
    metrics: str = METRICS

    def command(self, *args: str) -> str:
        return " ".join([self.executable, "--config", self.config, *args, "--metrics-file", self.metrics])


def crontab(config: Config, paths: Paths) -> str:
    full, changed = config.schedule.full or "0 3 * * *", config.schedule.changed or "*/15 * * * *"
    changed_line = f"{changed} {paths.command('refresh', '--changed', '--quiet')}"
    return f"""\
# summarizer: the nightly refresh from cron. Install with `crontab -e` as the user that runs it
# (or copy to /etc/cron.d/summarizer and add that user's name after the five time fields).
#
# - Times are the cron daemon's local time (CRON_TZ is honoured by cronie, not by every cron);
#   keep the machine on UTC, or prefer the systemd timer or `summarizer schedule`, which take an
#   explicit time zone.
# - Overlap is safe: a refresh that finds another one running exits 75 and changes nothing.
# - Exit codes: 0 ok, 1 failed (the live tables keep the last complete refresh), 2 bad config,
#   69 database unreachable, 75 skipped (another run holds the lock).
#   With --quiet cron mails only warnings and errors. Watch freshness with
#   `summarizer status --check --max-age 26h`, or alert on the metrics file (node_exporter textfile).
# - Keep the password out of this file: set SUMMARIZER_DATABASE_URL in the environment cron gives
#   the job (a line SUMMARIZER_DATABASE_URL=... at the top of the crontab) or in the config file,
#   readable by this user only.
#
# m  h  dom mon dow  command
{full} {paths.command('refresh', '--quiet')}
#
# Optional: every 15 minutes, only the months whose raw rows changed since the last successful run
# (needs updated_at_column in [source]). When the nightly run holds the lock this one is skipped (75).
{"" if config.schedule.changed else "#"}{changed_line}
"""


def service(paths: Paths) -> str:
    return f"""\
# summarizer: one full refresh of the summary tables, started by summarizer-refresh.timer.
#
# Install:  cp summarizer-refresh.service summarizer-refresh.timer /etc/systemd/system/
#           systemctl daemon-reload && systemctl enable --now summarizer-refresh.timer
# Run now:  systemctl start summarizer-refresh.service      Watch:  journalctl -fu summarizer-refresh
# Adjust User, the paths and the metrics directory; put SUMMARIZER_DATABASE_URL (with the password)
# in /etc/summarizer/env, mode 0600, rather than in this file.

[Unit]
Description=summarizer: refresh the summary tables
Wants=network-online.target
After=network-online.target

[Service]
Type=oneshot
User=summarizer
Group=summarizer
EnvironmentFile=-/etc/summarizer/env
ExecStart={paths.command('refresh')}
# 75: another refresh holds the lock (a manual run, say); this one was skipped, not failed
SuccessExitStatus=75
# `systemctl stop` sends SIGINT: the run stops, is recorded interrupted, and the live tables keep
# the last complete refresh (with SIGTERM it would be recorded interrupted only by the next run)
KillSignal=SIGINT
TimeoutStopSec=120
Nice=10
NoNewPrivileges=yes
PrivateTmp=yes
ProtectSystem=full
ProtectHome=read-only
"""


def on_calendar(config: Config) -> str:
    """``[schedule] full`` as a systemd calendar event; ValueError unless it is a fixed time of day."""
    match = DAILY.match((config.schedule.full or "0 3 * * *").strip())
    if not match or int(match.group(1)) > 59 or int(match.group(2)) > 23:
        raise ValueError(f"the timer takes a fixed time of day (M H * * *), got {config.schedule.full!r}: "
                         "write OnCalendar= by hand (man systemd.time), or use --print-cron")
    return f"*-*-* {int(match.group(2)):02d}:{int(match.group(1)):02d}:00 {config.schedule.timezone}"


def timer(config: Config) -> str:
    calendar = on_calendar(config)
    return f"""\
# summarizer: start summarizer-refresh.service at {calendar.split()[1][:5]} {config.schedule.timezone} every day.
# Persistent=true: a run missed while the machine was off starts right after boot (once, however
# many were missed). Check with `systemctl list-timers summarizer-refresh.timer`.

[Unit]
Description=summarizer: nightly refresh of the summary tables

[Timer]
OnCalendar={calendar}
Persistent=true
AccuracySec=1min
RandomizedDelaySec=0
Unit=summarizer-refresh.service

[Install]
WantedBy=timers.target
"""


def files(config: Config, paths: Paths) -> dict[str, str]:
    """``scripts/`` file name -> content."""
    return {"crontab.example": crontab(config, paths), "summarizer-refresh.service": service(paths),
            "summarizer-refresh.timer": timer(config)}
