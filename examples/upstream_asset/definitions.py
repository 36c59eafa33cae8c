"""An upstream asset as the IdP roster: your own HR asset feeds scim-pipeline, so lineage runs from it to the target.

`hr_people` stands for whatever your project already has (a dbt model, a warehouse table, an HR export job): one
row per person, loaded and stored by your IO manager like any other DataFrame asset. `idp_roster` turns it into the
roster every scim-pipeline source produces (`DataFrameRosterSource`: users, groups and memberships as text tables,
validated by the same rules as a roster file) and records what it read.

Run it:  dagster dev -f examples/upstream_asset/definitions.py   (then materialize both assets)
After the lead's wiring, the roster assets of scim-pipeline take `hr_people` as an input in place of `idp_roster`.
"""

import pandas as pd
from dagster import AssetExecutionContext, Definitions, MaterializeResult, MetadataValue, asset

from scim_pipeline.sources import DataFrameRosterSource
from scim_pipeline.sync.mapping import build_roster

DEPARTMENTS = ("Finance", "Engineering", "Support")


@asset(group_name="hr", description="The HR system's people (stand-in for your own model or table).")
def hr_people() -> pd.DataFrame:
    rows = []
    for i in range(30):
        rows.append(
            {
                "login": f"hr{i:03d}@corp.example",
                "first_name": f"Given{i}",
                "last_name": f"Family{i}",
                "department": DEPARTMENTS[i % len(DEPARTMENTS)],
                "employee_id": 5000 + i,  # an integer column: the roster receives "5000", "5001", …
                "on_payroll": i % 10 != 9,
                "manager_login": "hr000@corp.example" if i else None,
            }
        )
    return pd.DataFrame(rows)


def roster_source(people: pd.DataFrame) -> DataFrameRosterSource:
    """HR columns renamed to the default roster columns; one group per department."""
    users = pd.DataFrame(
        {
            "user_name": people["login"],
            "email": people["login"],
            "given_name": people["first_name"],
            "family_name": people["last_name"],
            "display_name": people["first_name"] + " " + people["last_name"],
            "department": people["department"],
            "employee_number": people["employee_id"],
            "active": people["on_payroll"],
            "manager": people["manager_login"],
        }
    )
    groups = pd.DataFrame({"group_name": [f"dept-{d.lower()}" for d in DEPARTMENTS]})
    memberships = pd.DataFrame({"group_name": "dept-" + people["department"].str.lower(), "user_name": people["login"]})
    return DataFrameRosterSource(users=users, groups=groups, memberships=memberships, label="asset hr_people")


@asset(group_name="scim", description="The IdP roster read from hr_people (validated, bad rows set aside).")
def idp_roster(context: AssetExecutionContext, hr_people: pd.DataFrame) -> MaterializeResult:
    raw, report = roster_source(hr_people).read_with_report()
    roster = build_roster(raw, shards=1)
    context.log.info("read %s users from %s", report.rows["users"], report.server)
    return MaterializeResult(
        metadata={
            **report.as_metadata(),
            "dagster/row_count": len(roster.users),
            "users_accepted": len(roster.users),
            "rows_rejected": len(roster.rejected),
            "memberships": len(roster.memberships),
            "first_users": MetadataValue.json(roster.users["key"].head(5).tolist()),
        }
    )


defs = Definitions(assets=[hr_people, idp_roster])
