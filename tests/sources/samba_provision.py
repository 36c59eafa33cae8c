"""Provision a throw-away Samba AD domain controller and seed it — run by Samba's own Python, not the project's.

    /usr/bin/python3 tests/sources/samba_provision.py SPEC.json

SPEC holds `target` (a folder), `realm`, `domain`, `host_name`, `admin_password`, `interface`, `seed` (LDIF added
in one transaction on the DC's own database, before the server starts: thousands of entries in seconds, where adds
over LDAP would take minutes) and `primary_groups` (group DN -> user DNs whose `primaryGroupID` becomes that group's
RID; the users must be members of it first). Prints the domain SID.

It calls `samba.provision.provision` rather than `samba-tool domain provision` because the tool always sets the
sysvol ACLs through the `acl_xattr` VFS module, which lives in `samba-vfs-modules` — a package this DC, serving
LDAP only, does not need.
"""

import json
import logging
import os
import sys

import ldb
from samba.auth import system_session
from samba.dcerpc import security
from samba.dsdb import DS_DOMAIN_FUNCTION_2008_R2
from samba.ndr import ndr_unpack
from samba.param import LoadParm
from samba.provision import provision
from samba.samdb import SamDB


def main(spec_path: str) -> None:
    with open(spec_path, encoding="utf-8") as spec_file:
        spec = json.load(spec_file)
    target = os.path.abspath(spec["target"])
    os.makedirs(os.path.join(target, "etc"), exist_ok=True)
    os.makedirs(os.path.join(target, "run"), exist_ok=True)
    smb_conf = os.path.join(target, "etc", "smb.conf")
    lp = LoadParm()
    lp.load(os.devnull)  # never the machine's /etc/samba/smb.conf
    options = {
        "interfaces": spec["interface"],
        "bind interfaces only": "yes",
        "server services": "ldap",  # no SMB, Kerberos, DNS, RPC: only what the tests use
        "log file": os.path.join(target, "samba.log"),
        # Not /run/samba: a pid file left there by an earlier DC names a pid the system may have given to another
        # process since, and samba then refuses to start ("already running").
        "pid directory": os.path.join(target, "run"),
        "log level": "1",
    }
    for name, value in options.items():
        lp.set(name, value)
    logging.basicConfig(level=logging.WARNING)
    result = provision(
        logging.getLogger("provision"),
        system_session(),
        smbconf=smb_conf,
        targetdir=target,
        realm=spec["realm"],
        domain=spec["domain"],
        hostname=spec["host_name"],
        serverrole="dc",
        dns_backend="NONE",
        adminpass=spec["admin_password"],
        dom_for_fun_level=DS_DOMAIN_FUNCTION_2008_R2,
        skip_sysvolacl=True,
        lp=lp,
    )
    samdb = SamDB(url=os.path.join(target, "private", "sam.ldb"), session_info=system_session(), lp=result.lp)
    samdb.transaction_start()
    try:
        if spec.get("seed"):
            samdb.add_ldif(spec["seed"])
        for group, members in spec.get("primary_groups", {}).items():
            sid = samdb.search(base=group, scope=ldb.SCOPE_BASE, attrs=["objectSid"])[0]["objectSid"][0]
            rid = str(ndr_unpack(security.dom_sid, sid)).rsplit("-", 1)[1]
            for member in members:
                change = ldb.Message(ldb.Dn(samdb, member))
                change["primaryGroupID"] = ldb.MessageElement(rid, ldb.FLAG_MOD_REPLACE, "primaryGroupID")
                samdb.modify(change)
    except BaseException:
        samdb.transaction_cancel()
        raise
    samdb.transaction_commit()
    print(result.domainsid)


if __name__ == "__main__":
    main(sys.argv[1])
