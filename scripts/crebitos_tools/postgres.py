"""A local PostgreSQL server (scripts/postgres-server, and the store of a --store postgres
stack): Debian's binaries, a cluster in a directory of its own."""
import argparse
import os
import shutil
import subprocess
import sys

from .prerequisites import need
from .processes import abspath, die, free_port, log, port_in_use, read_text, write

class Postgres:
    """A local PostgreSQL server in DIR: Debian's binaries, the cluster in DIR/data, run by the
    postgres user when called as root (PostgreSQL refuses root), 127.0.0.1 only, its socket in
    DIR, its port in DIR/port, its log in DIR/server.log, fsync on."""
    DB = ROLE = PASSWORD = "rinha"

    def __init__(self, directory, out=None):
        self.dir, self.out = abspath(directory), out or sys.stderr  # out: progress, pg_ctl's output
        self.data, self.bin = os.path.join(self.dir, "data"), self.find_bin()

    @staticmethod
    def find_bin():
        """Debian's server binaries of the newest version installed, or None."""
        root = "/usr/lib/postgresql"
        versions = sorted((v for v in os.listdir(root) if v.replace(".", "").isdigit()), key=float,
                          reverse=True) if os.path.isdir(root) else []
        return next((os.path.join(root, v, "bin") for v in versions
                     if os.access(os.path.join(root, v, "bin", "initdb"), os.X_OK)), None)

    def tool(self, name, *args, **kw):
        return subprocess.run((["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else [])
                              + [os.path.join(self.bin, name)] + list(args), **kw)

    def port(self):
        return read_text(os.path.join(self.dir, "port"))

    def url(self):
        return "postgres://%s:%s@127.0.0.1:%s/%s" % (self.ROLE, self.PASSWORD, self.port(), self.DB)

    def running(self):
        return (bool(self.bin) and os.path.exists(os.path.join(self.data, "postmaster.pid"))
                and self.tool("pg_ctl", "-D", self.data, "status", stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL).returncode == 0)

    def admin_sql(self, sql, database="postgres"):
        r = self.tool("psql", "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", self.dir, "-p", self.port(),
                      "-U", "postgres", "-d", database, "-Atc", sql, capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else die("psql: %s" % r.stderr.strip())

    def start(self, port=None, settings="", enter=None):
        """initdb if DIR has no cluster, start the server (on port, or its last port if free, or a
        free one), create the role and database rinha if missing; its URL. A running server is
        left as it is. enter: see spawn()."""
        self.bin = need("postgresql", self.find_bin, "PostgreSQL's server", self.out)
        if self.running():
            log("PostgreSQL in %s is already running (port %s)" % (self.dir, self.port()), self.out)
            return self.url()
        os.makedirs(self.dir, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
            os.chmod(self.dir, 0o700)
            if subprocess.run(["runuser", "-u", "postgres", "--", "test", "-x", self.dir]).returncode != 0:
                die("the postgres user cannot reach %s: every directory above it must be searchable by "
                    "others (chmod o+x)" % self.dir)
        if not read_text(os.path.join(self.data, "PG_VERSION")):
            log("initdb: a new cluster in %s" % self.data, self.out)
            initdb_log = os.path.join(self.dir, "initdb.log")
            with open(initdb_log, "w") as fh:
                if self.tool("initdb", "-D", self.data, "-U", "postgres", "--encoding=UTF8", "--locale=C",
                             "--auth-local=trust", "--auth-host=scram-sha-256",
                             stdout=fh, stderr=fh).returncode:
                    log(read_text(initdb_log), self.out)
                    die("initdb failed")
        last = self.port()
        port = int(port or (last if last and not port_in_use(int(last)) else free_port()))
        if port_in_use(port):
            die("port %d on 127.0.0.1 is already in use" % port)
        write(os.path.join(self.dir, "port"), "%d\n" % port)
        if os.geteuid() == 0:
            shutil.chown(os.path.join(self.dir, "port"), "postgres", "postgres")
        server_log = os.path.join(self.dir, "server.log")
        log("starting PostgreSQL on 127.0.0.1:%d (log: %s)" % (port, server_log), self.out)
        options = "-c listen_addresses=127.0.0.1 -p %d -k %s -c fsync=on %s" % (port, self.dir, settings)
        if self.tool("pg_ctl", "-D", self.data, "-l", server_log, "-w", "-t", "60", "-o", options, "start",
                     stdout=self.out, stderr=self.out, preexec_fn=enter).returncode != 0:
            log("\n".join((read_text(server_log) or "").splitlines()[-20:]), self.out)
            die("PostgreSQL did not start")
        for what, table, column, create in (
                ("role", "pg_roles", "rolname", "ROLE %s LOGIN PASSWORD '%s'" % (self.ROLE, self.PASSWORD)),
                ("database", "pg_database", "datname", "DATABASE %s OWNER %s" % (self.DB, self.ROLE))):
            if self.admin_sql("SELECT 1 FROM %s WHERE %s = 'rinha'" % (table, column)) != "1":
                log("creating the %s rinha" % what, self.out)
                self.admin_sql("CREATE " + create)
        # The ledger audit's integrity check (ledger.postgres_integrity) runs amcheck as rinha.
        self.admin_sql("CREATE EXTENSION IF NOT EXISTS amcheck; "
                       "GRANT EXECUTE ON FUNCTION bt_index_check(regclass, boolean) TO %s" % self.ROLE, self.DB)
        log("PostgreSQL ready: %s" % self.url(), self.out)
        return self.url()

    def stop(self):
        """Fast shutdown; True if it stopped or was not running."""
        if not (os.path.isdir(self.data) and self.running()):
            log("PostgreSQL in %s is not running" % self.dir, self.out)
            return True
        log("stopping PostgreSQL in %s" % self.dir, self.out)
        return self.tool("pg_ctl", "-D", self.data, "-m", "fast", "-w", "-t", "60", "stop",
                         stdout=self.out, stderr=self.out).returncode == 0

def postgres_main(argv):
    ap = argparse.ArgumentParser(prog="scripts/postgres-server", description=Postgres.__doc__ + " start: "
                                 "prints its URL last; status: the URL, or exit 3. POSTGRES_SERVER_SETTINGS: more "
                                 "`-c name=value`. See docs/STACK.md.")
    ap.add_argument("command", choices=["start", "stop", "status", "psql"])
    ap.add_argument("dir")
    ap.add_argument("args", nargs=argparse.REMAINDER, help="start: PORT; psql: psql's arguments")
    a = ap.parse_args(argv)
    pg = Postgres(a.dir)
    if a.command == "start":
        print(pg.start(a.args[0] if a.args else None, os.environ.get("POSTGRES_SERVER_SETTINGS", "")))
    elif a.command == "stop":
        return 0 if pg.stop() else 1
    elif not pg.running():
        log("PostgreSQL in %s is not running" % pg.dir)
        return 3 if a.command == "status" else 1
    elif a.command == "status":
        print(pg.url())
    else:
        os.environ["PGPASSWORD"] = pg.PASSWORD
        os.execv(os.path.join(pg.bin, "psql"), ["psql", "-X", "-h", "127.0.0.1", "-p", pg.port(), "-U", pg.ROLE,
                                                 "-d", pg.DB] + a.args)
    return 0
