"""The service's configuration: one validated, frozen settings object.

Sources, later ones winning: defaults, a YAML file (``--config``), environment
variables prefixed ``STREAM_MONITOR_`` (nested fields joined by ``__``, e.g.
``STREAM_MONITOR_KAFKA__BOOTSTRAP_SERVERS``), and secret files in the
directory named by ``STREAM_MONITOR_SECRETS_DIR`` (one file per field, e.g.
``kafka__sasl_password``). A ``STREAM_MONITOR_*`` variable that names no
setting (and is not one of :data:`ENV_NOT_SETTINGS`) is refused, as are
``kafka.properties`` the monitor sets itself. A bad config raises :class:`ConfigError` listing
every bad field with its reason; secrets never appear in ``repr`` or logs.
"""

from __future__ import annotations

import contextvars
import fnmatch
import re
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NestedSecretsSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from stream_monitor import detectors
from stream_monitor.detectors.reference import WARMUP_BOUNDS, SnapshotError, load_snapshot, snapshot_id
from stream_monitor.errors import ConfigError

__all__ = ["CompareRule", "ConfigError", "ModelRule", "Settings", "load_settings"]

_SECRET_PROPERTY_MARKERS = ("password", "secret", "token", "key", "credential")
#: librdkafka security properties whose values are safe to log; every other
#: sasl.* / ssl.* value is masked (e.g. sasl.oauthbearer.config carries secrets)
_SAFE_SECURITY_PROPERTIES = frozenset({
    "sasl.mechanism", "sasl.mechanisms", "sasl.username", "sasl.kerberos.service.name",
    "sasl.kerberos.principal", "sasl.oauthbearer.method", "sasl.oauthbearer.client.id",
    "sasl.oauthbearer.scope", "sasl.oauthbearer.token.endpoint.url",
    "ssl.ca.location", "ssl.certificate.location", "ssl.endpoint.identification.algorithm",
    "ssl.cipher.suites", "ssl.curves.list", "ssl.sigalgs.list", "ssl.providers",
    "enable.ssl.certificate.verification",
})


ENV_PREFIX = "STREAM_MONITOR_"
#: documented variables with our prefix that are not settings
ENV_NOT_SETTINGS = frozenset({"STREAM_MONITOR_SECRETS_DIR"})
#: librdkafka properties the monitor sets itself, with what to use instead
#: what Kafka accepts as a topic name
_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")

_OWNED_PROPERTIES = {
    "bootstrap.servers": "set kafka.bootstrap_servers instead",
    "group.id": "set kafka.group_id instead",
    "enable.auto.commit": "the monitor commits offsets itself, after the batch's alerts are delivered",
    "enable.auto.offset.store": "the monitor stores offsets itself, after the batch's alerts are "
                                "delivered",
    "auto.commit.interval.ms": "set consumer.commit_interval_s instead",
    "group.instance.id": "set kafka.instance_id instead",
    "enable.idempotence": "the monitor's producer is always idempotent with acks=all",
    "acks": "the monitor's producer is always idempotent with acks=all",
    "transactional.id": "set delivery: exactly_once instead (the id is made from kafka.group_id and "
                        "kafka.instance_id)",
    **{name: "a client callback is set by the monitor, not by configuration"
       for name in ("error_cb", "stats_cb", "throttle_cb", "oauth_cb", "logger", "on_commit",
                    "on_delivery", "on_assign", "on_revoke", "on_lost")},
}


def _is_secret_property(key: str) -> bool:
    lowered = key.lower()
    if lowered in _SAFE_SECURITY_PROPERTIES:
        return False
    return lowered.startswith(("sasl.", "ssl.")) or any(m in lowered for m in _SECRET_PROPERTY_MARKERS)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DetectorSpecModel(_Frozen):
    name: str
    params: dict[str, Any] = Field(default_factory=dict)


#: the folder of the config file being loaded: relative snapshot paths resolve against it
_CONFIG_DIR: contextvars.ContextVar[Path | None] = contextvars.ContextVar("config_dir", default=None)


class ReferenceRule(_Frozen):
    """Where a signal's reference distribution comes from.

    ``warmup``: the first N values of the signal (0 means each detector's own
    default); when set it must lie in ``WARMUP_BOUNDS`` (500 to 100,000), the
    sizes every warm-up detector accepts. ``snapshot``: a JSON file mapping
    signal name to a list of values (numeric) or to ``{category: count}``
    (categorical), as ``stream-monitor reference`` writes it from training
    data; a relative path is relative to the config file's folder. ``id``
    names it in alerts; a snapshot written by ``stream-monitor reference``
    carries its own id, so ``id`` may be left out (if given, it must agree).
    The snapshot is read and validated when the config loads (a stamped one
    against its content hash), so a corrupt one fails ``check-config``.
    """

    warmup: int = 0
    snapshot: Path | None = None
    id: str | None = None
    _snapshot_data: dict[str, Any] | None = PrivateAttr(default=None)
    _stamped_id: str | None = PrivateAttr(default=None)

    @field_validator("warmup")
    @classmethod
    def _warmup_in_bounds(cls, value: int) -> int:
        low, high = WARMUP_BOUNDS
        if value and not low <= value <= high:
            raise ValueError(f"must be 0 (each detector's default) or between {low} and {high}, got {value}")
        return value

    @field_validator("snapshot")
    @classmethod
    def _resolve_and_check_snapshot(cls, value: Path | None) -> Path | None:
        base = _CONFIG_DIR.get()
        if value is not None and not value.is_absolute() and base is not None:
            value = base / value
        if value is not None:
            try:
                load_snapshot(value)
            except SnapshotError as exc:
                raise ValueError(f"bad reference snapshot: {exc}") from None
        return value

    @model_validator(mode="after")
    def _snapshot_needs_id(self) -> ReferenceRule:
        if self.snapshot is None:
            return self
        try:
            stamped = snapshot_id(self.snapshot)
        except SnapshotError as exc:
            raise ValueError(f"bad reference snapshot: {exc}") from None
        if stamped is None and not self.id:
            raise ValueError("a reference snapshot needs an 'id' (or write it with 'stream-monitor reference', "
                             "which stamps one)")
        if stamped is not None and self.id and self.id != stamped:
            raise ValueError(f"'id' is {self.id!r} but the snapshot is stamped {stamped!r}: leave 'id' out "
                             f"or make them agree")
        self._stamped_id = stamped
        return self

    def reference_id(self) -> str | None:
        """The snapshot's id as alerts name it: the rule's ``id``, else the one stamped in the file."""
        return self.id or self._stamped_id

    def snapshot_data(self) -> dict[str, Any] | None:
        """The validated snapshot (signal -> values or counts), or None without one."""
        if self.snapshot is not None and self._snapshot_data is None:
            self._snapshot_data = load_snapshot(self.snapshot)
        return self._snapshot_data


class CompareRule(_Frozen):
    """How a model's live versions are compared (canary, A/B; see ``stream_monitor.compare``).

    ``baseline``: the version the others are compared with; None: the
    earliest-seen live version. ``alpha``: the model's false-alarm budget for
    comparisons over an unbounded run (split over its signals and possible
    candidates). ``bins``: numeric values are binned at up to this many
    quantiles (categorical: the ``bins - 1`` most frequent categories and
    "other"), cut from the first ``warmup`` values of both versions.
    """

    enabled: bool = True
    baseline: str | None = Field(default=None, min_length=1)
    alpha: float = Field(default=1e-4, gt=0, lt=1)
    bins: int = Field(default=8, ge=2, le=64)
    warmup: int = Field(default=200, ge=16, le=100_000)

    @model_validator(mode="after")
    def _warmup_fills_bins(self) -> CompareRule:
        if self.warmup < 4 * self.bins:
            raise ValueError(f"warmup ({self.warmup}) must be at least 4 x bins ({self.bins}): "
                             f"the bins are cut at quantiles of the warm-up")
        return self


class ModelRule(_Frozen):
    """What to monitor for models whose name matches ``model`` (a glob)."""

    model: str = "*"
    #: signals to monitor (``feature:<name>``, ``prediction``, ``performance:*``);
    #: globs allowed; None means every signal that appears, up to the cap
    signals: list[str] | None = None
    #: detectors per signal kind; a kind left out uses the calibrated default set
    detectors: dict[Literal["numeric", "categorical", "error"], list[DetectorSpecModel]] = Field(
        default_factory=dict)
    reference: ReferenceRule = Field(default_factory=ReferenceRule)
    #: severity of feature and prediction drift alerts; performance drift is "critical"
    severity: Literal["info", "warning", "critical"] = "warning"
    #: declared kinds per feature name (or ``prediction``); others are inferred from their values
    kinds: dict[str, Literal["numeric", "categorical"]] = Field(default_factory=dict)
    #: for a score prediction: the class is ``prediction >= threshold``
    classification_threshold: float | None = None
    #: comparison of live versions (a candidate against the baseline)
    compare: CompareRule = Field(default_factory=CompareRule)

    @model_validator(mode="after")
    def _detectors_build(self) -> ModelRule:
        problems = []
        for kind, specs in self.detectors.items():
            for position, spec in enumerate(specs):
                try:
                    detector = detectors.build(detectors.DetectorSpec(spec.name, spec.params))
                except detectors.SpecError as exc:
                    problems.append(f"detectors.{kind}[{position}]: {exc}")
                    continue
                if detector.kind != kind:
                    problems.append(f"detectors.{kind}[{position}]: {spec.name!r} watches "
                                    f"{detector.kind} signals, not {kind}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def matches(self, model: str) -> bool:
        return fnmatch.fnmatchcase(model, self.model)

    def wants(self, signal: str) -> bool:
        return self.signals is None or any(fnmatch.fnmatchcase(signal, p) for p in self.signals)


class KafkaSettings(_Frozen):
    bootstrap_servers: str = "127.0.0.1:9092"
    group_id: str = "stream-monitor"
    #: librdkafka properties passed verbatim to every client (consumer and producer)
    #: (kept out of repr: they may hold credentials; log redacted() instead)
    properties: dict[str, str | int | float | bool] = Field(default_factory=dict, repr=False)
    #: SASL password; prefer the env variable or a secret file to the YAML file
    sasl_password: SecretStr | None = None
    #: static group membership (``group.instance.id``): a restarted member with the same id
    #: gets its partitions back at once instead of after the session timeout. Unique per
    #: process; on Kubernetes the pod name of a StatefulSet (STREAM_MONITOR_KAFKA__INSTANCE_ID)
    instance_id: str | None = Field(default=None, min_length=1, max_length=249)

    @field_validator("bootstrap_servers")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must name at least one broker (host:port)")
        return value

    @field_validator("sasl_password")
    @classmethod
    def _strip_newline(cls, value: SecretStr | None) -> SecretStr | None:
        # secret files usually end with a newline that is not part of the password
        if value is None:
            return None
        return SecretStr(value.get_secret_value().rstrip("\r\n"))

    @field_validator("properties")
    @classmethod
    def _not_owned(cls, value: dict[str, Any]) -> dict[str, Any]:
        problems = [f"kafka.properties.{key}: {_OWNED_PROPERTIES[key.strip()]}"
                    for key in value if key.strip() in _OWNED_PROPERTIES]
        interval = value.get("statistics.interval.ms")
        if interval is not None and str(interval).strip() in ("0", "0.0", "False", "false"):
            problems.append("kafka.properties.statistics.interval.ms: 0 turns off the consumer "
                            "lag statistics that readiness and the lag gauge need (default 5000)")
        if problems:
            raise ValueError("; ".join(problems))
        return value

    def client_properties(self) -> dict[str, Any]:
        """The librdkafka properties shared by all clients, secrets included."""
        merged: dict[str, Any] = {"bootstrap.servers": self.bootstrap_servers, **self.properties}
        if self.sasl_password is not None:
            merged["sasl.password"] = self.sasl_password.get_secret_value()
        return merged


class TopicSettings(_Frozen):
    predictions: str = "ml.predictions"
    labels: str | None = "ml.labels"
    alerts: str = "ml.drift-alerts"
    dead_letter: str = "ml.dead-letter"


class ConsumerSettings(_Frozen):
    batch_size: int = Field(default=1000, ge=1, le=100_000)
    poll_timeout_s: float = Field(default=0.5, gt=0, le=30)
    commit_interval_s: float = Field(default=5.0, gt=0, le=3600)
    #: /readyz reports ready once the summed lag is at most this
    ready_max_lag: int = Field(default=10_000, ge=0)
    #: delivery exactly_once: a transaction (alerts, dead letters, state, offsets) commits this often
    transaction_interval_s: float = Field(default=1.0, gt=0, le=60)


class LimitSettings(_Frozen):
    max_message_bytes: int = Field(default=1_000_000, ge=64)
    #: dead letters keep at most this much of the original value (the rest is cut, and a
    #: header says so); below the producer's and the topic's message size limits
    dead_letter_max_bytes: int = Field(default=512_000, ge=1024)
    max_string_length: int = Field(default=1024, ge=1)
    max_features: int = Field(default=1024, ge=1)
    max_models: int = Field(default=100, ge=1)
    max_signals_per_model: int = Field(default=64, ge=1)
    #: versions of one model monitored at once; a new one evicts the least recently seen
    max_versions_per_model: int = Field(default=5, ge=1)
    #: when max_models is reached, the least recently seen model is evicted if it has had no
    #: event for at least this many events (0: always evict it); otherwise the new model is dropped
    model_min_idle_events: int = Field(default=0, ge=0)
    #: an event ``ts`` more than this ahead of the Kafka message time (or, without one,
    #: of the stream's clock) is implausible (a time far behind is kept: backfills): the event takes that time instead
    max_event_time_skew_s: float = Field(default=86_400.0, gt=0)


class StateSettings(_Frozen):
    """Durable detector and join state: the changelog topic and how often it is written."""

    #: the compacted changelog topic; default ``<kafka.group_id>.state``. Created at start
    #: when missing, with the predictions topic's partition count
    topic: str | None = Field(default=None, min_length=1, max_length=249)
    #: a partition's changed state is written at least this often...
    snapshot_interval_s: float = Field(default=5.0, gt=0, le=3600)
    #: ...or after this many input messages of the partition, whichever comes first
    snapshot_events: int = Field(default=100_000, ge=1)
    #: replication factor of a changelog topic the monitor creates (-1: the broker's default)
    replication_factor: int = Field(default=-1, ge=-1, le=32767)
    #: the longest a restore may take before the service gives up (exit 1)
    restore_timeout_s: float = Field(default=300.0, gt=0)

    @field_validator("replication_factor")
    @classmethod
    def _not_zero(cls, value: int) -> int:
        if value == 0:
            raise ValueError("must be -1 (the broker's default) or at least 1")
        return value


class MetricsSettings(_Frozen):
    host: str = "0.0.0.0"
    port: int = Field(default=9108, ge=0, le=65535)


class LabelSettings(_Frozen):
    """How long predictions wait for their labels, and labels for predictions."""

    retention_events: int = Field(default=100_000, ge=1)
    retention_seconds: float = Field(default=7 * 24 * 3600, gt=0)
    early_label_events: int = Field(default=10_000, ge=0)
    early_label_seconds: float = Field(default=3600, ge=0)
    #: labels that may queue behind an unresolved head label (pairs are released in
    #: label order) before it is given up as unmatched; default: early_label_events
    max_head_wait_labels: int | None = Field(default=None, ge=0)
    #: predictions waiting for labels over all models; the oldest is expired beyond it
    max_waiting_predictions: int = Field(default=1_000_000, ge=1)


class InputSettings(_Frozen):
    """How strictly input events are read."""

    #: dead-letter events with a top-level field the input contract does not know
    #: (reason ``unknown_field``); off: they are processed, counted and logged
    strict: bool = False
    #: over how many input partitions one model's events are spread: 1 when producers key
    #: by model (the documented keying); the predictions topic's partition count when they
    #: key by event id or round-robin. State is per partition, so a spread model runs one
    #: detector family per partition, and each family gets this share of the model's
    #: false-alarm budget (``run`` and ``replay`` alike)
    model_partitions: int = Field(default=1, ge=1, le=10_000)


class Settings(BaseSettings):
    """Every setting of the service. Immutable once loaded."""

    model_config = SettingsConfigDict(
        frozen=True, extra="forbid", env_prefix="STREAM_MONITOR_", env_nested_delimiter="__",
    )

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    topics: TopicSettings = Field(default_factory=TopicSettings)
    consumer: ConsumerSettings = Field(default_factory=ConsumerSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    labels: LabelSettings = Field(default_factory=LabelSettings)
    input: InputSettings = Field(default_factory=InputSettings)
    state: StateSettings = Field(default_factory=StateSettings)
    #: at_least_once: alerts may repeat after a crash (same alert_id); exactly_once: alerts,
    #: dead letters, state and offsets commit in one Kafka transaction, and read_committed
    #: subscribers see each alert once
    delivery: Literal["at_least_once", "exactly_once"] = "exactly_once"
    #: when set, events of other models are dead-lettered as ``unknown_model``
    allowed_models: list[str] | None = None
    #: per-model rules; the first whose glob matches applies; none matching means defaults
    models: list[ModelRule] = Field(default_factory=list)
    #: stream_monitor_drift_active stays 1 for this many seconds (wall clock) after a
    #: detector's last detection, so that scrapes see it whatever the event rate
    drift_active_hold_s: float = Field(default=600.0, gt=0)
    #: replaced by drift_active_hold_s: refused with a message that says so
    drift_active_values: None = Field(default=None, exclude=True, repr=False)
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    #: auto: readable text lines when stderr is a terminal, JSON lines otherwise
    log_format: Literal["auto", "json", "text"] = "auto"

    @classmethod
    def settings_customise_sources(
        cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource, dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # secret files are named like the fields, nested with "__" (kafka__sasl_password);
        # the directory is read when the settings load, not when this module imports
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        secrets_dir = os.environ.get("STREAM_MONITOR_SECRETS_DIR")
        if secrets_dir:
            sources.append(NestedSecretsSettingsSource(
                file_secret_settings, secrets_dir=secrets_dir, secrets_dir_missing="error",
                secrets_prefix="", secrets_nested_delimiter="__"))
        # the YAML file (set by load_settings) is the lowest-priority source
        sources.append(YamlConfigSettingsSource(settings_cls))
        return tuple(sources)

    @field_validator("drift_active_values", mode="before")
    @classmethod
    def _drift_active_values_was_replaced(cls, value: Any) -> None:
        if value is None:
            return None
        # a count of values ended the gauge between two scrapes at high event rates
        raise ValueError("replaced by drift_active_hold_s (the seconds stream_monitor_drift_active "
                         "stays 1 after a detection)")

    @model_validator(mode="after")
    def _state_topic_is_legal(self) -> Settings:
        # Kafka refuses other topic names; say so now, not at the first start
        topic = self.state_topic
        if not _TOPIC_NAME.fullmatch(topic) or topic in (".", ".."):
            field = "state.topic" if self.state.topic else "kafka.group_id"
            raise ValueError(f"{field}: the state topic {topic!r} is not a legal Kafka topic name "
                             f"(letters, digits, '.', '_', '-', at most 249 characters)"
                             + ("" if self.state.topic else ": set state.topic"))
        return self

    @property
    def state_topic(self) -> str:
        """The changelog topic: ``state.topic``, or ``<kafka.group_id>.state``."""
        return self.state.topic or f"{self.kafka.group_id}.state"

    def rule_for(self, model: str) -> ModelRule:
        for rule in self.models:
            if rule.matches(model):
                return rule
        return _DEFAULT_RULE

    def redacted(self) -> dict[str, Any]:
        """The settings as data for logs: secrets and secret-looking properties masked."""
        data = self.model_dump(mode="json")
        kafka = data["kafka"]
        if kafka.get("sasl_password") is not None:
            kafka["sasl_password"] = "***"
        kafka["properties"] = {key: ("***" if _is_secret_property(key) else value)
                               for key, value in kafka["properties"].items()}
        return data


_DEFAULT_RULE = ModelRule()


def _env_names(model: type[BaseModel], prefix: str) -> tuple[set[str], set[str]]:
    """Upper-cased variable names that set a field, and prefixes under which any name does."""
    names: set[str] = set()
    prefixes: set[str] = set()
    for field_name, field in model.model_fields.items():
        name = f"{prefix}{field_name.upper()}"
        names.add(name)
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            nested_names, nested_prefixes = _env_names(annotation, f"{name}__")
            names |= nested_names
            prefixes |= nested_prefixes
        elif getattr(annotation, "__origin__", None) is dict:
            prefixes.add(f"{name}__")  # e.g. STREAM_MONITOR_KAFKA__PROPERTIES__sasl.username
    return names, prefixes


def unknown_environment(environ: dict[str, str] | None = None) -> list[str]:
    """``STREAM_MONITOR_*`` variables that name no setting (names compared case-insensitively)."""
    names, prefixes = _env_names(Settings, ENV_PREFIX)
    names |= ENV_NOT_SETTINGS
    unknown = []
    for variable in (os.environ if environ is None else environ):
        upper = variable.upper()
        if not upper.startswith(ENV_PREFIX) or upper in names:
            continue
        if not any(upper.startswith(p) and len(upper) > len(p) for p in prefixes):
            unknown.append(variable)
    return sorted(unknown)


def _problems(error: Any) -> list[tuple[str, str]]:
    """(field, reason) pairs of one pydantic error.

    A validator that names entries inside its field (``"kafka.properties.acks:
    reason; ..."``) gets one problem per entry, named by the entry.
    """
    field = ".".join(str(part) for part in error["loc"]) or "(root)"
    message = str(error["msg"]).removeprefix("Value error, ")
    parts = message.split("; ")
    if error["type"] == "value_error" and all(p.startswith(f"{field}.") and ": " in p for p in parts):
        return [tuple(part.split(": ", 1)) for part in parts]  # type: ignore[misc]
    if field == "(root)" and re.match(r"[a-z_]+(\.[a-z_]+)+: ", message):
        # a check across sections names the field it is about
        return [tuple(message.split(": ", 1))]  # type: ignore[list-item]
    return [(field, str(error["msg"]))]


def load_settings(path: str | Path | None = None, **overrides: Any) -> Settings:
    """Load and validate the settings; raise :class:`ConfigError` with every problem."""
    if path is not None and not Path(path).is_file():
        raise ConfigError([("--config", f"file not found: {path}")])
    unknown = unknown_environment()
    if unknown:
        raise ConfigError([(variable, "no such setting (a typo? nested fields are joined by '__', "
                                      "e.g. STREAM_MONITOR_KAFKA__GROUP_ID)") for variable in unknown])
    settings_cls: type[Settings] = Settings
    if path is not None:
        settings_cls = type("Settings", (Settings,), {
            "model_config": {**Settings.model_config, "yaml_file": str(path)},
            "__module__": __name__,
        })
    token = _CONFIG_DIR.set(None if path is None else Path(path).resolve().parent)
    try:
        return settings_cls(**overrides)
    except ValidationError as exc:
        raise ConfigError([problem for error in exc.errors() for problem in _problems(error)]) from None
    except Exception as exc:  # noqa: BLE001 - e.g. YAML syntax errors from the source
        raise ConfigError([(str(path or "(environment)"), f"{type(exc).__name__}: {exc}")]) from None
    finally:
        _CONFIG_DIR.reset(token)
