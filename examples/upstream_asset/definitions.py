"""An upstream asset as the IdP roster: your own HR asset feeds scim-pipeline, so lineage runs from it to the target.

`hr_people` stands for whatever your project already has (a dbt model, a warehouse table, an HR export job): one
row per person, loaded and stored by your IO manager like any other DataFrame asset. `hr_users`, `hr_groups` and
`hr_memberships` shape it into the default roster columns (docs/mapping.md); the ScimProvisioningComponent takes
them as inputs in place of a roster folder, validates them with the same rules as any roster, and provisions them.

Run it:  dagster dev -f examples/upstream_asset/definitions.py   (then "Materialize all"; SCIM_BASE_URL unset means
the embedded emulator stands in for the target)
"""

import pandas as pd
from dagster import Definitions, asset

from scim_pipeline.components import ScimProvisioningComponent

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


@asset(group_name="hr", description="hr_people in the default roster columns.")
def hr_users(hr_people: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_name": hr_people["login"],
            "email": hr_people["login"],
            "given_name": hr_people["first_name"],
            "family_name": hr_people["last_name"],
            "display_name": hr_people["first_name"] + " " + hr_people["last_name"],
            "department": hr_people["department"],
            "employee_number": hr_people["employee_id"],
            "active": hr_people["on_payroll"],
            "manager": hr_people["manager_login"],
        }
    )


@asset(group_name="hr", description="One group per department.")
def hr_groups() -> pd.DataFrame:
    return pd.DataFrame({"group_name": [f"dept-{d.lower()}" for d in DEPARTMENTS]})


@asset(group_name="hr", description="Everyone in their department's group.")
def hr_memberships(hr_people: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"group_name": "dept-" + hr_people["department"].str.lower(), "user_name": hr_people["login"]})


scim = ScimProvisioningComponent(
    shards=2,
    upstream_users="hr_users",
    upstream_groups="hr_groups",
    upstream_memberships="hr_memberships",
)

defs = Definitions.merge(Definitions(assets=[hr_people, hr_users, hr_groups, hr_memberships]), scim.definitions())
