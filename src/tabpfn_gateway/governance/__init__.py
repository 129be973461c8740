"""Spend governance: policies on principals and keys, rate limits, fit concurrency, credit
budgets (reserve -> settle -> refund), alerts, and usage reports. See docs/governance.md."""

from __future__ import annotations

from tabpfn_gateway.governance._alerts import (
    SIGNATURE_HEADER,
    AlertDispatcher,
    BudgetAlert,
    WebhookSender,
    sign_payload,
)
from tabpfn_gateway.governance._context import client_address, publish_headers, response_headers
from tabpfn_gateway.governance._engine import (
    Admission,
    BudgetStatus,
    BudgetUsage,
    PolicyEngine,
    rate_limit_headers,
)
from tabpfn_gateway.governance._ledger import BudgetLedger, RedisLedger, StoreLedger
from tabpfn_gateway.governance._limiter import (
    InProcessLimiter,
    RateCheck,
    RateDecision,
    RateLimiter,
    RedisLimiter,
    StoreLimiter,
)
from tabpfn_gateway.governance._periods import BudgetSpan, budget_span
from tabpfn_gateway.governance._policy import (
    POLICY_FIELDS,
    EffectivePolicy,
    PolicySource,
    address_allowed,
    build_policy,
    effective_policy,
)
from tabpfn_gateway.governance._reports import (
    REPORT_DIMENSIONS,
    ReportDimension,
    UsageReport,
    UsageReportRow,
    build_usage_report,
    parse_dimensions,
    report_csv,
)
from tabpfn_gateway.governance._spend import GovernancePolicy

__all__ = [
    "POLICY_FIELDS",
    "REPORT_DIMENSIONS",
    "SIGNATURE_HEADER",
    "Admission",
    "AlertDispatcher",
    "BudgetAlert",
    "BudgetLedger",
    "BudgetSpan",
    "BudgetStatus",
    "BudgetUsage",
    "EffectivePolicy",
    "GovernancePolicy",
    "InProcessLimiter",
    "PolicyEngine",
    "PolicySource",
    "RateCheck",
    "RateDecision",
    "RateLimiter",
    "RedisLedger",
    "RedisLimiter",
    "ReportDimension",
    "StoreLedger",
    "StoreLimiter",
    "UsageReport",
    "UsageReportRow",
    "WebhookSender",
    "address_allowed",
    "budget_span",
    "build_policy",
    "build_usage_report",
    "client_address",
    "effective_policy",
    "parse_dimensions",
    "publish_headers",
    "rate_limit_headers",
    "report_csv",
    "response_headers",
    "sign_payload",
]
