"""The preflight's second part: do the db, app and web hosts agree with each other?

Reads the roles' views of each host (see :mod:`.wiring`), whose names and types are
already checked: the server listens where and how the app hosts connect (port, address,
TLS, users, grants, firewall); nginx's upstreams are where the app hosts listen, and each
app host admits its web hosts. Without a db group (a managed database) the inventory must
say what the kit cannot see: the server's max_connections and, with TLS, its CA.
"""

from __future__ import annotations

import fnmatch
import ipaddress
import os
from collections.abc import Iterator, Mapping
from typing import Any

from .common import Finding, is_address, true

Views = Mapping[str, Mapping[str, Mapping[str, Any]]]

LOOPBACK = ("127.0.0.1", "::1", "localhost")
ANY_ADDRESS = ("0.0.0.0", "::", "*")
# The server's variable, the app's, and the shared variable both follow.
FOLLOW = [
    ("mysql_port", "app_db_port", "db_port"),
    ("mysql_app_user", "app_db_user", "db_user"),
    ("mysql_app_database", "app_db_name", "db_name"),
    ("mysql_migrate_user", "app_db_migrate_user", "db_migrate_user"),
]


def port_of(listen: str) -> str:
    return listen.rpartition(":")[2]


def admits(entries: list[Any], address: str) -> bool:
    """Does an allow list (addresses, networks, MariaDB % and _ patterns) take address?"""
    for entry in map(str, entries):
        if entry in ("any", "%", address):
            return True
        if "%" in entry or "_" in entry:
            if fnmatch.fnmatchcase(address, entry.replace("%", "*").replace("_", "?")):
                return True
            continue
        try:
            if "/" in entry and ipaddress.ip_address(address) in ipaddress.ip_network(entry, False):
                return True
        except ValueError:
            continue
    return False


def server(db: str, d: Mapping[str, Any], apps: Mapping[str, Any]) -> Iterator[Finding]:
    """The server's settings against the app hosts'."""
    idle = d["db_idle_timeout"]
    wait, interactive = d["mysql_wait_timeout"], d["mysql_interactive_timeout"]
    if float(wait) != float(idle) or float(interactive) != float(idle):
        yield (
            (db,),
            (
                f"mysql_wait_timeout={wait} and mysql_interactive_timeout={interactive} must both "
                f"equal db_idle_timeout={idle}, which the app hosts follow: remove them from the "
                "inventory and set db_idle_timeout"
            ),
        )
    for server_name, app_name, source in FOLLOW:
        differ = [a for a, v in apps.items() if str(v[app_name]) != str(d[server_name])]
        if differ:
            yield (
                (db, *differ),
                (
                    f"{server_name}={d[server_name]} on {db} but {app_name}="
                    f"{apps[differ[0]][app_name]} on the app hosts: set {source} (both follow it), "
                    "not either of them"
                ),
            )
    tls = true(d["mysql_tls"])
    differ = [a for a, v in apps.items() if bool(str(v["app_db_tls_ca"])) != tls]
    if differ:
        state = "requires" if tls else "does not serve"
        yield (
            (db, *differ),
            (
                f"{db} {state} TLS (mysql_tls={d['mysql_tls']}) but app_db_tls_ca is "
                f"{apps[differ[0]]['app_db_tls_ca'] or 'empty'} on the app hosts: set db_tls "
                "(both follow it), not either of them"
            ),
        )


def client(
    db: str, d: Mapping[str, Any], wall: Mapping[str, Any], app: str, a: Any, primary: bool = True
) -> Iterator[Finding]:
    """One app host reaches the server (its address and certificate name only when the
    server is the primary): grant, firewall."""
    host, own, bind = str(a["app_db_host"]), str(a["private_address"]), str(d["mysql_bind_address"])
    if primary:
        yield from reached(db, d, app, host, bind)
    if app == db:
        return
    if not admits(d["mysql_app_client_hosts"], own):
        yield (
            (db, app),
            (
                f"mysql_app_client_hosts on {db} does not admit {app} ({own}): the app could not "
                "log in: set db_client_addresses to the app hosts' addresses"
            ),
        )
    if true(wall["firewall_enabled"]) and not admits(wall["firewall_db_clients"], own):
        yield (
            (db, app),
            (
                f"firewall_db_clients on {db} does not admit {app} ({own}): set "
                "db_client_addresses to the app hosts' addresses"
            ),
        )


def reached(db: str, d: Mapping[str, Any], app: str, host: str, bind: str) -> Iterator[Finding]:
    """The primary's address and certificate name are where the app host connects."""
    listens = {*ANY_ADDRESS, host} & set(bind.split(","))
    if host in LOOPBACK and app != db:
        yield (app,), f"app_db_host={host} on {app}, which is not the db host {db}: set db_address"
    elif host not in LOOPBACK and is_address(host) and not listens:
        yield (
            (db, app),
            (
                f"app_db_host={host} on {app} but MariaDB on {db} listens on "
                f"mysql_bind_address={bind}: set db_address to {bind}"
            ),
        )
    names = list(map(str, d["mysql_tls_names"]))
    if true(d["mysql_tls"]) and true(d["db_tls_generate"]) and host not in names:
        yield (
            (db, app),
            (
                f"app_db_host={host} on {app} is not a name on {db}'s certificate "
                f"(mysql_tls_names={names}): the app would refuse it: set db_address to one of them"
            ),
        )


def tls_files(db: str, d: Mapping[str, Any]) -> Iterator[Finding]:
    """The kit's own CA, or every file of the operator's own."""
    ca, tls_dir = str(d["db_tls_ca_cert"]), str(d["db_tls_dir"])
    if true(d["db_tls_generate"]):
        if os.path.normpath(ca) != os.path.normpath(os.path.join(tls_dir, "ca.crt")):
            yield (
                (db,),
                (
                    f"db_tls_ca_cert={ca} is not the CA the kit makes ({tls_dir}/ca.crt) but "
                    "db_tls_generate is true: set db_tls_generate: false to use your own CA "
                    "(and mysql_tls_cert, mysql_tls_key)"
                ),
            )
        return
    for name in ("db_tls_ca_cert", "mysql_tls_cert", "mysql_tls_key"):
        if not os.path.isfile(str(d[name])):
            yield (
                (db,),
                (
                    f"{name}={d[name]} is not a file on the controller and db_tls_generate is "
                    "false: point it at your file, or set db_tls_generate: true"
                ),
            )


def managed(apps: Mapping[str, Any]) -> Iterator[Finding]:
    """No db group: the app hosts use a database the kit does not provision."""
    for app, a in apps.items():
        if not str(a["app_db_host"]):
            yield (
                (app,),
                (
                    "there is no db group and db_address is empty: set db_address to the address "
                    "or name of the database the app hosts use"
                ),
            )
        if not str(a["db_max_connections"]).strip():
            yield (
                (app,),
                (
                    "there is no db group (a managed database): set db_max_connections to that "
                    "server's max_connections, so the app hosts' pools are checked against it"
                ),
            )
        ca = str(a["db_tls_ca_cert"])
        if true(a["db_tls"]) and not os.path.isfile(ca):
            yield (
                (app,),
                (
                    f"db_tls_ca_cert={ca} is not a file on the controller: set it to the CA "
                    "certificate that signed the managed database's certificate (or db_tls: false "
                    "for plaintext across the network)"
                ),
            )


def web_tls(host: str, n: Mapping[str, Any]) -> Iterator[Finding]:
    """HTTPS for clients: its own port, and the operator's files when the kit makes none."""
    if not true(n["nginx_tls"]):
        return
    plain = {port_of(str(e).split()[0]) for e in n["nginx_listen"]}
    shared = sorted(plain & {port_of(str(e).split()[0]) for e in n["nginx_tls_listen"]})
    if shared:
        yield (
            (host,),
            (
                f"nginx_listen and nginx_tls_listen both use port {', '.join(shared)}: give HTTPS "
                "a port of its own (443), or set nginx_tls: false to serve plain HTTP only"
            ),
        )
    if int(n["nginx_hsts_max_age"]) < 0:
        yield (
            (host,),
            f"nginx_hsts_max_age={n['nginx_hsts_max_age']} is below 0: set seconds, or 0 for none",
        )
    if true(n["nginx_tls_acme"]):
        yield from web_acme(host, n)
    if true(n["nginx_tls_generate"]):
        return
    for name in ("nginx_tls_certificate", "nginx_tls_certificate_key"):
        if not os.path.isfile(str(n[name])):
            yield (
                (host,),
                (
                    f"{name}={n[name]} is not a file on the controller and nginx_tls_generate is "
                    "false: point it at your file, or set nginx_tls_generate: true"
                ),
            )


def web_acme(host: str, n: Mapping[str, Any]) -> Iterator[Finding]:
    """A certificate from an ACME CA: DNS names only, and a directory certbot can trust."""
    names = [str(name) for name in n["nginx_tls_names"]]
    addresses = [name for name in names if is_address(name) or name in ("_", "localhost")]
    if addresses or not names:
        yield (
            (host,),
            (
                f"nginx_tls_names={names} with nginx_tls_acme: an ACME CA certifies public DNS "
                "names only: set nginx_server_name (or nginx_tls_names) to the site's DNS names"
            ),
        )
    server = str(n["nginx_tls_acme_server"])
    if not server.startswith("https://"):
        yield (
            (host,),
            (
                f"nginx_tls_acme_server={server} is not an https:// URL: set it to the ACME "
                "directory (Let's Encrypt: https://acme-v02.api.letsencrypt.org/directory)"
            ),
        )
    ca = str(n["nginx_tls_acme_server_ca"])
    if ca and not os.path.isfile(ca):
        yield (
            (host,),
            (
                f"nginx_tls_acme_server_ca={ca} is not a file on the controller: point it at "
                'the CA of your ACME server\'s HTTPS, or set it to "" for a public one'
            ),
        )


def web(host: str, n: Mapping[str, Any], views: Views) -> Iterator[Finding]:
    """One web host: its upstreams, its open ports, and the app hosts admitting it."""
    apps, walls = views["app"], views["firewall"]
    expected = []
    for app, a in apps.items():
        listen = str(a["app_listen"])
        if listen.startswith("/") and app != host:
            yield (
                (app, host),
                (
                    f"app_listen={listen} on {app} is a unix socket, which {host} cannot reach: "
                    "set app_listen to ADDRESS:PORT, or remove it (the default when nginx is "
                    "elsewhere)"
                ),
            )
        expected.append(f"unix:{listen}" if listen.startswith("/") else listen)
    servers = list(map(str, n["nginx_upstream_servers"]))
    if sorted(servers) != sorted(expected):
        yield (
            (host,),
            (
                f"nginx_upstream_servers={servers} but the app hosts listen on {expected}: remove "
                "nginx_upstream_servers from the inventory (it follows their app_listen)"
            ),
        )
    yield from web_tls(host, n)
    wall = walls[host]
    listens = ["nginx_listen", "nginx_tls_listen"] if true(n["nginx_tls"]) else ["nginx_listen"]
    for name in listens:
        ports = {port_of(str(e).split()[0]) for e in n[name]}
        closed = sorted(ports - {str(p) for p in wall["firewall_web_ports"]})
        if true(wall["firewall_enabled"]) and closed:
            yield (
                (host,),
                (
                    f"nginx listens on port {', '.join(closed)} ({name}) but firewall_web_ports="
                    f"{wall['firewall_web_ports']}: set {name} in the inventory (the firewall "
                    "follows it) or firewall_web_ports"
                ),
            )
    per_address = int(wall["firewall_web_connections_per_address"])
    slots = int(n["nginx_worker_connections"])
    if true(wall["firewall_enabled"]) and not 0 <= per_address < slots:
        yield (
            (host,),
            (
                f"firewall_web_connections_per_address={per_address} but nginx_worker_connections="
                f"{slots}: set it between 1 and {slots - 1}, or to 0 for no bound (one address "
                "must not fill an nginx worker)"
            ),
        )
    address = str(wall["private_address"])
    for app, a in apps.items():
        if app == host or str(a["app_listen"]).startswith("/"):
            continue
        app_wall = walls[app]
        lists = [(a, "app_forwarded_allow_ips"), (a, "app_socket_ip_address_allow")]
        lists += [(a, "app_ip_address_allow")]
        if true(app_wall["firewall_enabled"]):
            lists.append((app_wall, "firewall_app_clients"))
        for values, name in lists:
            if not admits(values[name], address):
                yield (
                    (app,),
                    (
                        f"{name} on {app} lacks {host}'s address {address}: remove {name} from the "
                        "inventory (it follows the web hosts)"
                    ),
                )
        port = port_of(str(a["app_listen"]))
        if true(app_wall["firewall_enabled"]) and str(app_wall["firewall_app_port"]) != port:
            yield (
                (app,),
                (
                    f"app_listen={a['app_listen']} on {app} but firewall_app_port="
                    f"{app_wall['firewall_app_port']}: set app_port (both follow it), not either"
                ),
            )


def replication(dbs: Mapping[str, Any], apps: Mapping[str, Any]) -> Iterator[Finding]:
    """More than one db host: each but db_primary replicates it, seeded from its backup,
    over TLS, semi-synchronously."""
    hosts = tuple(dbs)
    primary = str(next(iter(dbs.values()))["db_primary"])
    if primary not in dbs:
        yield (
            hosts,
            (
                f"db_primary={primary or '(empty)'} is not a host of the db group, whose other "
                f"hosts replicate it: set db_primary to one of {', '.join(dbs)}"
            ),
        )
        return
    off = [db for db, d in dbs.items() if not true(d["mysql_replication"])]
    if off:
        yield (
            tuple(off),
            (
                f"mysql_replication is false on {', '.join(off)}, and the db group has "
                f"{len(dbs)} hosts: each would be a server with its own data: remove "
                "mysql_replication from the inventory, or keep one host in the db group"
            ),
        )
    for name, why in (
        ("mysql_binlog", "replicas read the primary's binary logs"),
        ("mysql_backup", "a replica is seeded from a backup, and any db host may be the primary"),
        ("mysql_tls", "replication would cross the network in clear text"),
    ):
        off = [db for db, d in dbs.items() if not true(d[name])]
        if off:
            yield (tuple(off), f"{name} is false on {', '.join(off)}: {why}: set it to true")
    ids = [str(d["mysql_server_id"]) for d in dbs.values()]
    if len(set(ids)) < len(ids):
        yield (
            hosts,
            (
                f"mysql_server_id is not unique in the db group ({', '.join(ids)}): remove it "
                "from the inventory (each host's place in the group)"
            ),
        )
    timeout = int(dbs[primary]["mysql_semi_sync_timeout"])
    slow = [a for a, v in apps.items() if timeout >= float(v["app_db_read_timeout"])]
    if slow:
        yield (
            (primary, *slow),
            (
                f"mysql_semi_sync_timeout={timeout} on {primary} is not below app_db_read_timeout="
                f"{apps[slow[0]]['app_db_read_timeout']} on the app hosts: a COMMIT waiting for a "
                "lost replica would fail in the app: lower mysql_semi_sync_timeout"
            ),
        )
    for db, d in dbs.items():
        # Linux's retransmissions start at 200 ms and double: the time until it gives up.
        retries = int(d["mysql_replication_tcp_retries2"])
        gives_up = 0.2 * (2 ** (retries + 1) - 1)
        net, beat = int(d["mysql_replication_net_timeout"]), int(d["mysql_replication_heartbeat"])
        if beat + gives_up >= net:
            yield (
                (db,),
                (
                    f"mysql_replication_tcp_retries2={retries} on {db} keeps a dead replica "
                    f"connection about {gives_up:.0f} s, and with the heartbeat ({beat} s) that "
                    f"is not below mysql_replication_net_timeout={net}: the replica would "
                    "reconnect while it is open, which stalls the primary: lower it"
                ),
            )
        limit = str(d["network_idle_timeout"]).strip()
        if not 0 < beat < net or (limit and beat >= float(limit)):
            yield (
                (db,),
                (
                    f"mysql_replication_heartbeat={beat} on {db} must be above 0 and below "
                    f"mysql_replication_net_timeout={net}"
                    + (f" and network_idle_timeout={limit}" if limit else "")
                    + ": remove it from the inventory (it follows both)"
                ),
            )


def floating(dbs: Mapping[str, Any]) -> Iterator[Finding]:
    """db_floating_address (an IPv4 address, wiring.addresses): no host's own, and for
    keepalived between db hosts."""
    address = str(next(iter(dbs.values()))["db_floating_address"]).strip()
    if not address:
        return
    hosts = tuple(dbs)
    if len(dbs) < 2:
        yield (
            hosts,
            (
                f"db_floating_address={address} moves between db hosts, and the db group has "
                "one: remove db_floating_address, or add the replica to the db group"
            ),
        )
        return
    off = [db for db, d in dbs.items() if not true(d["mysql_failover"])]
    if off:
        yield (
            tuple(off),
            (
                f"mysql_failover is false on {', '.join(off)}, and db_floating_address={address} "
                "is where the app hosts connect: nothing would hold it there: remove "
                "mysql_failover from the inventory"
            ),
        )
    others = sorted({str(d["db_address"]) for d in dbs.values()} - {address})
    if others:
        yield (
            hosts,
            (
                f"db_address={others[0]} but db_floating_address={address}: the app hosts would "
                "not follow a failover: remove db_address from the inventory (it follows "
                "db_floating_address)"
            ),
        )
    taken = [db for db, d in dbs.items() if str(d["private_address"]) == address]
    if taken:
        yield (
            hosts,
            (
                f"db_floating_address={address} is {taken[0]}'s own address, which keepalived "
                "would take from it: set it to an address no host uses, on the db hosts' network"
            ),
        )
    ids = {str(d["mysql_vrrp_router_id"]) for d in dbs.values()}
    if len(ids) > 1 or not 1 <= int(ids.pop()) <= 255:
        yield (
            hosts,
            (
                f"mysql_vrrp_router_id must be one number from 1 to 255 on every db host "
                f"({', '.join(sorted(str(d['mysql_vrrp_router_id']) for d in dbs.values()))}): "
                "set it once for the db group"
            ),
        )


def backups(views: Views) -> Iterator[Finding]:
    """The backup group: one host, apart from the db hosts, which back up to copy."""
    stores, dbs = views.get("backup_store", {}), views["mysql"]
    if not stores:
        return
    if len(stores) > 1:
        yield (
            tuple(stores),
            (
                f"the backup group has {len(stores)} hosts, and the db hosts copy to one: "
                "keep one host in the backup group"
            ),
        )
    if not dbs:
        yield (
            tuple(stores),
            (
                "the backup group keeps the db hosts' backups, and there is no db group: "
                "remove the backup group (a managed database is backed up by its provider)"
            ),
        )
    for store in sorted(set(stores) & set(dbs)):
        yield (
            (store,),
            (
                f"{store} is in both the db and the backup group, and a copy on the db host "
                "is lost with it: put another host in the backup group"
            ),
        )
    for db, d in dbs.items():
        if not true(d["mysql_backup"]):
            yield (
                (db,),
                (
                    f"mysql_backup is false on {db}, so there is nothing to copy to the "
                    "backup host: set mysql_backup to true, or remove the backup group"
                ),
            )


def problems(views: Views) -> Iterator[Finding]:
    yield from backups(views)
    apps, dbs, walls = views["app"], views["mysql"], views["firewall"]
    if apps and not dbs:
        yield from managed(apps)
    unused = [h for h, v in walls.items() if str(v["db_max_connections"]).strip()]
    if dbs and unused:
        yield (
            tuple(unused),
            (
                "db_max_connections is for a managed database (no db group): with db hosts, set "
                "mysql_max_connections instead"
            ),
        )
    if dbs:
        yield from floating(dbs)
    if len(dbs) > 1:
        found = list(replication(dbs, apps))
        yield from found
        if found:
            return
    for db, d in dbs.items() if apps else ():
        yield from server(db, d, apps)
        for app, a in apps.items():
            # The app hosts write to the primary; a replica only has to admit them.
            yield from client(db, d, walls[db], app, a, primary=db == str(d["db_primary"]))
        if true(walls[db]["firewall_enabled"]) and str(walls[db]["firewall_db_port"]) != str(
            d["mysql_port"]
        ):
            yield (
                (db,),
                (
                    f"firewall_db_port={walls[db]['firewall_db_port']} but MariaDB listens on "
                    f"mysql_port={d['mysql_port']}: set db_port (both follow it), not either"
                ),
            )
        if true(d["mysql_tls"]):
            yield from tls_files(db, d)
    webs = views["nginx"]
    if webs and not apps:
        yield (
            tuple(webs),
            (
                "nginx on the web hosts passes requests to the app group, which has no host: "
                "add your app hosts to the app group, or remove the web group"
            ),
        )
    unreached = [app for app, a in apps.items() if str(a["app_listen"]).startswith("/")]
    if unreached and not webs:
        yield (
            tuple(unreached),
            (
                "app_listen is a unix socket, and no host runs nginx (the web group is empty): "
                "nothing can reach the app: add a host to the web group (an app host itself, "
                "for nginx beside the app)"
            ),
        )
    for host, n in webs.items():
        yield from web(host, n, views)
