"""What libxl does for a vsnd device: a description model (``vsnd_config``), the pure plan
of XenStore writes and removal steps (``plan``), and a thin applier (``apply``)."""

from .plan import DevicePlan, PlanWrite, RemovalPlan, plan_device, plan_removal
from .vsnd_config import (
    VsndCard,
    VsndConfigError,
    VsndParams,
    VsndPcm,
    VsndStream,
    cards_from_obj,
    load_toml,
    parse_toml,
    parse_xl_cfg,
    parse_xl_items,
)

__all__ = [
    "DevicePlan", "PlanWrite", "RemovalPlan", "VsndCard", "VsndConfigError", "VsndParams",
    "VsndPcm", "VsndStream", "cards_from_obj", "load_toml", "parse_toml", "parse_xl_cfg",
    "parse_xl_items", "plan_device", "plan_removal",
]
