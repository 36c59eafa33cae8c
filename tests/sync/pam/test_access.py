"""The access file: YAML and CSV read into desired containers, permissions and placements; every bad row set aside
with its file, line and reason, the rest proceeding, and what a bad row names held as it is."""

from __future__ import annotations

from pathlib import Path

import pytest

from scim_pipeline.scim.errors import ConfigurationError
from scim_pipeline.sync.pam.access import AccessFile, load_access

USERS = ["ada@example.com", "bob@example.com"]
GROUPS = ["Vault Admins", "Auditors"]


def load(tmp_path: Path, text: str, name: str = "access.yaml") -> AccessFile:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return load_access(path, users=USERS, groups=GROUPS)


def rejections(access: AccessFile) -> list[tuple[int, str | None, str | None, str]]:
    rows = access.rejected[["row", "key", "field", "reason"]].itertuples(index=False)
    return [(int(r), k if isinstance(k, str) else None, f, str(reason)) for r, k, f, reason in rows]


def test_a_yaml_file_yields_containers_permissions_and_placements(tmp_path: Path) -> None:
    access = load(
        tmp_path,
        """
containers:
  - name: Production
    permissions:
      - group: vault admins
        rights: [owner, Edit, add secret]
      - user: ada@example.com
        rights: View
    privileged_data:
      - prod-db-root
      - id: "4711"
  - name: Staging
    id: c-42
""",
    )
    assert access.rejected.empty
    assert [(c.name, c.scim_id, c.row) for c in access.containers] == [("Production", None, 3), ("Staging", "c-42", 12)]
    assert [(p.container, p.principal_type, p.principal, sorted(p.rights), p.row) for p in access.permissions] == [
        ("Production", "group", "vault admins", ["Add Secret", "Edit", "Owner"], 5),
        ("Production", "user", "ada@example.com", ["View"], 7),
    ]
    assert [(d.data, d.by, d.data_key) for d in access.placements] == [
        ("prod-db-root", "name", "prod-db-root"),
        ("4711", "id", "id:4711"),
    ]


def test_a_csv_file_reads_like_the_yaml_one(tmp_path: Path) -> None:
    access = load(
        tmp_path,
        "container,type,name,rights\n"
        "Production,group,Vault Admins,Owner;View\n"
        "Production,user,bob@example.com,Edit\n"
        "Production,privileged_data,prod-db-root,\n"
        "Audit,container,,\n"
        "Audit,privileged_data_id,4711,\n",
        name="access.csv",
    )
    assert access.rejected.empty
    assert [c.name for c in access.containers] == ["Production", "Audit"]
    assert [(p.principal, sorted(p.rights), p.row) for p in access.permissions] == [
        ("Vault Admins", ["Owner", "View"], 2),
        ("bob@example.com", ["Edit"], 3),
    ]
    assert [(d.container, d.data_key, d.row) for d in access.placements] == [
        ("Production", "prod-db-root", 4),
        ("Audit", "id:4711", 6),
    ]


def test_each_bad_row_is_set_aside_with_its_line_and_the_rest_proceeds(tmp_path: Path) -> None:
    access = load(
        tmp_path,
        """
containers:
  - name: Production
    permissions:
      - group: Nobody
        rights: [View]
      - group: Auditors
        rights: [Read]
      - group: Auditors
        user: ada@example.com
        rights: [View]
      - user: bob@example.com
        rights: []
      - user: ada@example.com
        rights: [View]
      - user: ADA@example.com
        rights: [Edit]
  - name: production
  - permissions: []
""",
    )
    assert rejections(access) == [
        (5, "Nobody", "group", "unknown group 'Nobody': not in the roster (or its row was set aside)"),
        (7, "Auditors", "rights", "unknown right 'Read'; valid rights: Owner, Edit, Add Secret, View"),
        (9, "Production", "group", "a permission names exactly one group or one user"),
        (12, "bob@example.com", "rights", "no rights given; valid rights: Owner, Edit, Add Secret, View"),
        (
            16,
            "ADA@example.com",
            "user",
            "duplicate user 'ADA@example.com' on 'Production' (first at line 14)",
        ),
        (18, "production", "name", "duplicate container 'production' (first at line 3); entry ignored"),
        (19, None, "name", "a container needs a name (Delinea finds containers by name only)"),
    ]
    assert [(p.principal, p.row) for p in access.permissions] == [("ada@example.com", 14)]


def test_what_a_rejected_row_names_is_held(tmp_path: Path) -> None:
    access = load(
        tmp_path,
        """
containers:
  - name: Production
    permissions:
      - group: Auditors
        rights: [Veiw]
  - name: Staging
    permisions:
      - group: Auditors
        rights: [View]
""",
    )
    assert access.is_held("production", "group", "auditors")
    assert not access.is_held("production", "group", "vault admins")
    # A misspelt key must not read as "no permissions": the whole container is held, and not planned.
    assert access.is_held("staging", "group", "vault admins")
    assert [c.name for c in access.containers] == ["Production"]


def test_privileged_data_can_be_placed_in_one_container_only(tmp_path: Path) -> None:
    access = load(
        tmp_path,
        """
containers:
  - name: A
    privileged_data: [root]
  - name: B
    privileged_data:
      - name: ROOT
""",
    )
    assert [r[3] for r in rejections(access)] == [
        "privileged data 'ROOT' is already placed at line 3: it can be in one container only"
    ]
    assert [d.container for d in access.placements] == ["A"]


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("access.yaml", "containers: [unclosed", "not valid YAML"),
        ("access.yaml", "folders: []\n", "top-level 'containers:' list"),
        ("access.csv", "folder,who\nA,B\n", "container,type,name,rights"),
        ("access.txt", "containers: []\n", "must be .yaml, .yml or .csv"),
    ],
)
def test_a_file_that_cannot_be_read_names_scim_access(tmp_path: Path, name: str, text: str, message: str) -> None:
    with pytest.raises(ConfigurationError, match="SCIM_ACCESS") as raised:
        load(tmp_path, text, name=name)
    assert message in str(raised.value)


def test_an_empty_file_is_an_empty_access_file(tmp_path: Path) -> None:
    access = load(tmp_path, "")
    assert (access.containers, access.permissions, access.placements) == ([], [], [])


def test_the_bundled_sample_matches_the_sample_roster() -> None:
    from scim_pipeline.resources.pipeline import RosterSourceResource

    resource = RosterSourceResource(demo=True)
    roster = resource.load().roster
    access = resource.load_access(roster)
    assert access is not None
    assert access.rejected.empty
    assert len(access.containers) >= 3
    assert len(access.permissions) >= 8
