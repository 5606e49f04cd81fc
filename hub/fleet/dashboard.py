"""Dashboard page `/models`: which station runs which bundles, and which set is current for it."""

from __future__ import annotations

import json

from flask import Blueprint, render_template
from sqlalchemy import select

from hub.extensions import session
from hub.fleet.tables import BundleSet
from hub.fleet.updates import fleet_overview, set_json
from hub.login import login_required

fleet_dashboard = Blueprint("fleet_dashboard", __name__)
SETS_SHOWN = 20


@fleet_dashboard.get("/models")
@login_required
def models() -> str:
    s = session()
    sets = [
        set_json(s, b) for b in s.scalars(select(BundleSet).order_by(BundleSet.id.desc()).limit(SETS_SHOWN))
    ]
    return render_template("models.html", devices=fleet_overview(s), sets=sets, dumps=json.dumps)
