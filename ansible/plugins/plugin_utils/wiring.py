"""The preflight's first part: can the inventory's hosts work together at all?

The preflight reads what each role will see on each host (the ``check_inventory`` action,
:mod:`.views`): ``views`` (role -> host -> variable -> value;
passwords as stars), ``specs`` (each role's ``meta/argument_specs.yml`` options), ``set``
(the kit's names each host sets itself), ``groups``, and ``errors`` (variables that could
not be templated). In the inventory's own words, this checks:

* names and types: a misspelt variable of the kit, a value of the wrong type;
* addresses where a name will not do: MariaDB's grants under ``skip-name-resolve``,
  systemd's ``IPAddressAllow=`` and ``ListenStream=``, nginx's upstreams, the firewall;
* the shared variables (roles/shared) seen alike by every host, and the passwords;
* what the app hosts deploy (:mod:`.release`);
* then :mod:`.agreement`: the db, app and web hosts agreeing with each other.

The kit's rules between settings (:mod:`.inventory`) run once this finds nothing.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from . import agreement, release
from .common import Finding, is_address

# systemd's IPAddressAllow= keywords besides addresses and networks.
SYSTEMD_KEYWORDS = ("any", "localhost", "link-local", "multicast")
MIN_PASSWORD = 12
VAULT_HINT = (
    "set it in your inventory's group_vars, encrypted with ansible-vault "
    "(see inventories/example/group_vars/all/vault.yml)"
)


def split_listen(listen: str) -> tuple[str, str]:
    """ "10.0.0.21:8000" -> ("10.0.0.21", "8000"); "[::1]:8000" -> ("::1", "8000")."""
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), port


def names(inventory: Mapping[str, Any]) -> Iterator[Finding]:
    """Every name with a kit prefix that a host sets must be an option of one of the roles."""
    known = {name for options in inventory["specs"].values() for name in options}
    for host, own in inventory["set"].items():
        for name in sorted(set(own) - known):
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.8)
            hint = f" (did you mean {close[0]}?)" if close else ""
            yield (
                (host,),
                f"{name} is not a variable of the kit's roles{hint}: correct or remove it",
            )
    for host, errors in inventory["errors"].items():
        for name, error in errors.items():
            yield (host,), f"{name} cannot be worked out ({error}): set it, or what it refers to"


def is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    try:
        float(str(value))
    except ValueError:
        return False
    return True


def type_problem(name: str, value: Any, spec: Mapping[str, Any]) -> str | None:
    """Like Ansible's argument spec check, but a list must be a list (not a comma string)."""
    kind = spec.get("type", "raw")
    whole = not isinstance(value, bool) and str(value).strip().lstrip("-").isdigit()
    if kind == "int" and not whole:
        return f"{name}={value!r} is not a whole number: set it to a whole number"
    if kind == "float" and not is_number(value):
        return f"{name}={value} is not a positive number of seconds: set {name} to one"
    if kind == "bool" and str(value).lower() not in ("true", "false", "yes", "no", "1", "0"):
        return f"{name}={value!r} is not true or false: set it to true or false"
    if kind == "str" and isinstance(value, (list, dict)):
        return f"{name}={value!r} is not a single value: set it to a string"
    if kind == "dict" and not isinstance(value, dict):
        return f"{name}={value!r} is not a mapping: write it as a YAML mapping"
    if kind == "list" and not isinstance(value, list):
        return f"{name}={value!r} is not a list: write it as a YAML list"
    if kind == "list":
        element = {"type": spec.get("elements", "raw")}
        bad = [v for v in value if type_problem(name, v, element)]
        if bad:
            return f"{name} has {bad[0]!r}, not a {element['type']}: correct that entry"
    return None


def types(inventory: Mapping[str, Any]) -> Iterator[Finding]:
    """The values a host sets itself first: a default derived from a wrong one is noise."""
    specs = {n: spec for options in inventory["specs"].values() for n, spec in options.items()}
    found: dict[bool, list[Finding]] = {True: [], False: []}
    for view in inventory["views"].values():
        for host, values in view.items():
            own = inventory["set"].get(host, [])
            for name, value in values.items():
                problem = type_problem(name, value, specs.get(name, {}))
                if problem:
                    found[name in own].append(((host,), problem))
    # The idle limits: positive numbers, and network_idle_timeout may be empty.
    for host, values in inventory["views"]["firewall"].items():
        for name in ("db_idle_timeout", "network_idle_timeout"):
            value = values.get(name, "")
            if str(value).strip() and (not is_number(value) or float(value) <= 0):
                problem = f"{name}={value} is not a positive number of seconds: set {name} to one"
                found[True].append(((host,), problem))
    yield from found[True] or found[False]


def allowed(entry: str) -> bool:
    return entry in SYSTEMD_KEYWORDS or is_address(entry, networks=True)


def grant_host(entry: str) -> bool:
    """A MariaDB account host that matches without DNS: an address, a pattern, a netmask."""
    if entry in ("localhost", "%") or is_address(entry):
        return True
    if "/" in entry:
        return all(is_address(part) for part in entry.split("/", 1))
    digits = all(c in "0123456789abcdef.:%_" for c in entry.lower())
    return digits and any(c in entry for c in "%_")


# Lists of addresses: the role, the variable, what an entry may be.
ADDRESS_LISTS: list[tuple[str, str, Callable[[str], bool]]] = [
    ("app", "app_ip_address_allow", allowed),
    ("app", "app_socket_ip_address_allow", allowed),
    ("app", "app_forwarded_allow_ips", lambda e: e == "*" or is_address(e, networks=True)),
    ("mysql", "mysql_app_client_hosts", grant_host),
    ("firewall", "firewall_db_clients", lambda e: is_address(e, networks=True)),
    ("firewall", "firewall_app_clients", lambda e: is_address(e, networks=True)),
    ("firewall", "firewall_ssh_sources", lambda e: is_address(e, networks=True)),
    ("firewall", "firewall_backup_clients", lambda e: is_address(e, networks=True)),
]


def addresses(inventory: Mapping[str, Any]) -> Iterator[Finding]:
    """Where only an address works, a name is refused with the variable that holds it."""
    views = inventory["views"]
    hosts = views["firewall"]
    named = {
        h: v["private_address"]
        for h, v in hosts.items()
        if not is_address(str(v["private_address"]))
    }
    if named:
        values = ", ".join(f"{h}: {v}" for h, v in named.items())
        yield (
            tuple(named),
            (
                f"private_address is a name, not an address ({values}): MariaDB's grants "
                "(skip-name-resolve), IPAddressAllow=, ListenStream=, nginx's upstreams and the "
                "firewall need one: set private_address for each (host_vars) to its address on the "
                "network between the hosts"
            ),
        )
    floating = {str(v["db_floating_address"]).strip() for v in hosts.values()} - {""}
    bad_floating = sorted(a for a in floating if not is_address(a) or ":" in a)
    if bad_floating:
        yield (
            tuple(views["mysql"]) or tuple(hosts),
            (
                f"db_floating_address={bad_floating[0]} is not an IPv4 address: set it to an "
                "address no host uses, on the db hosts' network"
            ),
        )
    if named or bad_floating:
        return  # every check below would repeat it
    fix = "give the host it names a private_address, or list addresses and networks only"
    for role, name, ok in ADDRESS_LISTS:
        for host, values in views[role].items():
            bad = [e for e in map(str, values.get(name, [])) if not ok(e)]
            if bad and bad[0] == str(values.get("db_address")):  # a managed database's name
                yield (
                    (host,),
                    (
                        f"{name} lists db_address={bad[0]}, a name: systemd's IPAddressAllow= "
                        f"takes addresses and networks only: set {name} to localhost, the "
                        "database's address or network, and the web hosts' addresses"
                    ),
                )
            elif bad:
                yield (host,), f"{name} lists {bad[0]!r}, not an address or network: {fix}"
    for host, values in views["app"].items():
        listen = str(values["app_listen"])
        if not listen.startswith("/") and not is_address(split_listen(listen)[0]):
            yield (
                (host,),
                (
                    f"app_listen={listen} is neither a unix socket path nor ADDRESS:PORT "
                    f"(systemd's ListenStream= takes no names): set private_address for {host}"
                ),
            )
    for host, values in views["mysql"].items():
        copy = str(values["mysql_backup_copy_address"])
        if copy and not is_address(copy):
            yield (
                (host,),
                (
                    f"mysql_backup_copy_address={copy} is not an address (systemd's "
                    "IPAddressAllow= takes no names): give the backup host a private_address"
                ),
            )
        bind = str(values["mysql_bind_address"])
        if not (all(map(is_address, bind.split(","))) or bind == "*"):
            yield (
                (host,),
                f"mysql_bind_address={bind} is not an address: set {host}'s private_address",
            )
    for host, values in views["nginx"].items():
        for server in map(str, values["nginx_upstream_servers"]):
            if not (server.startswith("unix:/") or is_address(split_listen(server)[0])):
                yield (
                    (host,),
                    (
                        f"nginx_upstream_servers lists {server!r}, not ADDRESS:PORT or unix:PATH: "
                        "remove nginx_upstream_servers from the inventory (it follows the app "
                        "hosts' app_listen) and give each app host a private_address"
                    ),
                )


def shared(inventory: Mapping[str, Any]) -> Iterator[Finding]:
    """The shared variables (roles/shared) must look the same from every host."""
    hosts = inventory["views"]["firewall"]
    for name in inventory["specs"].get("shared", {}):
        if name == "private_address":  # the one per host
            continue
        seen: dict[str, list[str]] = {}
        for host, values in hosts.items():
            seen.setdefault(str(values.get(name)), []).append(host)
        if len(seen) > 1:
            parts = "; ".join(f"{', '.join(h)}: {v}" for v, h in seen.items())
            yield (
                tuple(hosts),
                (
                    f"{name} differs between hosts ({parts}): set it once for all of them "
                    "(your inventory's group_vars/all)"
                ),
            )


# Each password as the roles name it, and the shared variable it follows.
PASSWORDS = {
    "db_password": [("app", "app_db_password"), ("mysql", "mysql_app_password")],
    "db_migrate_password": [
        ("app", "app_db_migrate_password"),
        ("mysql", "mysql_migrate_password"),
    ],
}


def secrets(inventory: Mapping[str, Any]) -> Iterator[Finding]:
    """The views hold stars for passwords: their length is all this can check."""
    for source, uses in PASSWORDS.items():
        short = {
            host: None
            for role, name in uses
            for host, values in inventory["views"][role].items()
            if len(str(values.get(name, ""))) < MIN_PASSWORD
        }
        if short:
            yield (
                tuple(short),
                (f"{source} is not set (or shorter than {MIN_PASSWORD} characters): {VAULT_HINT}"),
            )
    dbs = inventory["views"]["mysql"]
    unset = [
        host
        for host, values in dbs.items()
        if len(str(values.get("mysql_replication_password", ""))) < MIN_PASSWORD
    ]
    if len(dbs) > 1 and unset:
        yield (
            tuple(unset),
            (
                f"db_replication_password is not set (or shorter than {MIN_PASSWORD} characters), "
                f"and the replicas of the db group's {len(dbs)} hosts log in with it: {VAULT_HINT}"
            ),
        )


def problems(inventory: Mapping[str, Any]) -> Iterator[Finding]:
    """Names and types first, then addresses: the checks after them read the values."""
    found = [*names(inventory), *types(inventory)]
    if not found:
        found = list(addresses(inventory))
    if found:
        yield from found
        return
    yield from shared(inventory)
    yield from secrets(inventory)
    yield from release.problems(inventory["views"])
    yield from agreement.problems(inventory["views"])
