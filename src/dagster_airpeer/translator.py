"""How an Airflow DAG becomes a Dagster asset spec.

Follows Dagster's translator convention (as dagster-dbt's ``DagsterDbtTranslator``): subclass
`DagsterAirflowTranslator`, override the methods you want, and pass an instance to
``build_defs_from_airflow_instance(translator=...)``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg

from .airflow.models import Dag

_PLAIN_KEY_PART = re.compile(r"^[A-Za-z0-9_\-]+$")
_NOT_WORD = re.compile(r"[^A-Za-z0-9_]")
_TAG_VALUE_MAX = 63


def sanitize_dag_id(dag_id: str) -> str:
    """The asset key component for a DAG id.

    DAG ids made of ASCII letters, digits, ``_`` and ``-`` are kept as they are. Anything else (``.``,
    spaces, ``/``, unicode) is replaced by ``_`` and a short hash of the original id is appended, so two
    different ids never map to one key and a key never changes when other DAGs appear or disappear. Dots
    are replaced too because Dagster 1.12 derives op input names from asset keys and rejects them there;
    keys must not change with the Dagster version.
    """
    if _PLAIN_KEY_PART.match(dag_id):
        return dag_id
    digest = hashlib.blake2b(dag_id.encode(), digest_size=4).hexdigest()
    return f"{_NOT_WORD.sub('_', dag_id)}__{digest}"


def _tag_key(raw: str) -> str | None:
    # Dagster tag keys: letters, digits, '-', '_', '.', at most 63 characters.
    key = re.sub(r"[^A-Za-z0-9_.\-]", "_", raw)[:_TAG_VALUE_MAX]
    return key or None


class DagsterAirflowTranslator:
    """Translates an Airflow `Dag` into the `dagster.AssetSpec` of its peered asset.

    The default methods give: key ``[instance_name, "dag", dag_id]``, the DAG's own description, Dagster
    tags from Airflow tags, kind ``airflow``, owners from the DAG's owners when they are e-mail addresses or
    ``team:`` names, and metadata with the DAG id, a link to the DAG in that Airflow version's UI, schedule,
    file location and paused state.
    """

    def get_asset_key(self, instance_name: str, dag: Dag) -> dg.AssetKey:
        return dg.AssetKey([instance_name, "dag", sanitize_dag_id(dag.dag_id)])

    def get_description(self, dag: Dag) -> str:
        if dag.description:
            return dag.description
        return f"Airflow DAG `{dag.dag_id}`, peered by airpeer."

    def get_tags(self, dag: Dag) -> Mapping[str, str]:
        tags: dict[str, str] = {}
        for airflow_tag in dag.tags:
            # Airflow tags are free text; "key:value" becomes a key/value tag, anything else a key-only tag
            # (Dagster shows a tag with an empty value as a label).
            name, sep, value = airflow_tag.partition(":")
            key = _tag_key(name.strip() if sep else airflow_tag.strip())
            if key is None:
                continue
            tag_value = re.sub(r"[^A-Za-z0-9_.\-]", "_", value.strip())[:_TAG_VALUE_MAX] if sep else ""
            tags[key] = tag_value
        return tags

    def get_kinds(self, dag: Dag) -> set[str]:
        return {"airflow"}

    def get_owners(self, dag: Dag) -> Sequence[str]:
        # Dagster owners must be e-mail addresses or "team:" names; Airflow's default owner is "airflow".
        return [o for o in dag.owners if "@" in o or o.startswith("team:")]

    def get_group_name(self, dag: Dag) -> str | None:
        return None

    def get_metadata(self, dag: Dag, *, dag_url: str, source: str | None = None) -> Mapping[str, Any]:
        metadata: dict[str, Any] = {
            "airflow/dag_id": dag.dag_id,
            "airflow/dag_url": dg.MetadataValue.url(dag_url),
            "airflow/schedule": dag.schedule or "None (triggered only)",
            "airflow/is_paused": bool(dag.is_paused),
            "airflow/owners": ", ".join(dag.owners),
        }
        if dag.fileloc:
            metadata["airflow/fileloc"] = dag.fileloc
        if dag.timetable_description:
            metadata["airflow/timetable"] = dag.timetable_description
        if source is not None:
            metadata["airflow/source_code"] = dg.MetadataValue.md(f"```python\n{source}\n```")
        return metadata

    def get_asset_spec(
        self, instance_name: str, dag: Dag, *, dag_url: str, source: str | None = None
    ) -> dg.AssetSpec:
        """The whole spec; override the finer methods rather than this one where you can."""
        return dg.AssetSpec(
            key=self.get_asset_key(instance_name, dag),
            description=self.get_description(dag),
            tags=self.get_tags(dag),
            kinds=self.get_kinds(dag),
            owners=self.get_owners(dag),
            group_name=self.get_group_name(dag),
            metadata=self.get_metadata(dag, dag_url=dag_url, source=source),
        )
