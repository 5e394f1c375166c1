"""The native stack controller's pieces that other tools depend on without running a stack:
the pid files' start-time check, stack.env as both Python and bash read it, the limits read
from a compose file, and the rendered nginx.conf."""
import os
import shutil
import subprocess
import tempfile
import unittest

from crebitos_tools import REPO, cgroups, nginxconf, processes, stackstate


def read(path):
    with open(path) as fh:
        return fh.read()


def tempdir(test):
    """A directory removed when test ends."""
    path = tempfile.mkdtemp()
    test.addCleanup(shutil.rmtree, path)
    return path


class PidFiles(unittest.TestCase):
    def setUp(self):
        self.dir = tempdir(self)
        self.path = os.path.join(self.dir, "svc.pid")

    def test_a_recorded_process_that_runs_is_alive(self):
        self.assertTrue(processes.write_pidfile(self.path, os.getpid()))
        self.assertEqual(processes.pidfile_alive(self.path), os.getpid())

    def test_a_reused_pid_is_not_our_process(self):
        # The same pid with another start time: a process that reused the pid of ours.
        with open(self.path, "w") as fh:
            fh.write("%d %d\n" % (os.getpid(), int(processes.proc_starttime(os.getpid())) + 1))
        self.assertIsNone(processes.pidfile_alive(self.path))

    def test_a_zombie_has_finished(self):
        child = subprocess.Popen(["true"])
        self.addCleanup(child.wait)
        processes.write_pidfile(self.path, child.pid)
        for _ in range(100):
            if processes.is_zombie(child.pid):
                break
            subprocess.run(["sleep", "0.01"])
        self.assertIsNone(processes.pidfile_alive(self.path))


class StackEnv(unittest.TestCase):
    def test_python_and_bash_read_what_up_writes(self):
        state = tempdir(self)
        env = {"INSTANCES": "api01 api02", "STACK_PORT": 9999, "ODD": "it's $HOME `x`"}
        stackstate.write_stack_env(state, env)
        self.assertEqual(stackstate.stack_env(state), {k: str(v) for k, v in env.items()})
        out = subprocess.run(["bash", "-c", 'source "$1/stack.env"; printf "%s|%s|%s" "$INSTANCES" "$STACK_PORT" "$ODD"',
                              "_", state], capture_output=True, text=True).stdout
        self.assertEqual(out, "api01 api02|9999|it's $HOME `x`")


COMPOSE = """x-api: &api
  deploy:
    resources:
      limits:
        cpus: "0.55"
        memory: 250MB
services:
  api01:
    <<: *api
  nginx:
    deploy:
      resources:
        limits:
          cpus: "0.4"
          memory: 50MB
"""


class Limits(unittest.TestCase):
    def setUp(self):
        fd, self.path = tempfile.mkstemp()
        self.addCleanup(os.remove, self.path)
        with os.fdopen(fd, "w") as fh:
            fh.write(COMPOSE)

    def test_a_service_s_own_limits(self):
        self.assertEqual(cgroups.compose_limit("nginx", "cpus", self.path), "0.4")
        self.assertEqual(cgroups.compose_limit("nginx", "memory", self.path), "50MB")

    def test_an_instance_takes_the_x_api_limits(self):
        self.assertEqual(cgroups.compose_limit("api01", "memory", self.path), "250MB")
        self.assertEqual(cgroups.compose_limit("api02", "cpus", self.path), "0.55")

    def test_a_missing_limit_stops(self):
        with self.assertRaises(SystemExit):
            cgroups.compose_limit("postgres", "cpus", self.path)

    def test_megabytes_as_docker_counts_them(self):
        self.assertEqual(cgroups.mb_to_bytes("250MB"), 262144000)
        self.assertEqual(cgroups.mb_to_bytes("1g"), 1 << 30)
        self.assertEqual(cgroups.mb_to_bytes("4096"), 4096)


@unittest.skipUnless(shutil.which("nginx"), "needs nginx (nginx -V)")
class NginxConf(unittest.TestCase):
    def setUp(self):
        self.dir = tempdir(self)
        self.dst = os.path.join(self.dir, "nginx.conf")

    def test_the_native_copy_differs_only_where_it_must(self):
        ups = ["unix:/s/api01.sock", "unix:/s/api02.sock", "127.0.0.1:9003"]
        nginxconf.render_nginx_conf(os.path.join(REPO, "nginx.conf"), self.dst, 12345, self.dir + "/tmp", ups)
        text = read(self.dst)
        self.assertIn("listen 127.0.0.1:12345", text)
        self.assertNotIn("listen 9999", text)
        self.assertNotIn("/run/crebitos/", text)
        for up in ups:
            self.assertIn("server %s max_fails=1 fail_timeout=1s;" % up, text)
        self.assertIn("proxy_temp_path %s/tmp/proxy;" % self.dir, text)
        self.assertEqual(subprocess.run(["nginx", "-t", "-q", "-p", self.dir + "/", "-c", self.dst, "-e", "/dev/null",
                                         "-g", "pid %s/nginx.pid;" % self.dir]).returncode, 0)

    def test_a_conf_without_the_lines_it_rewrites_is_refused(self):
        src = os.path.join(self.dir, "src.conf")
        with open(src, "w") as fh:
            fh.write(read(os.path.join(REPO, "nginx.conf")).replace("api02.sock", "other.sock"))
        with self.assertRaises(SystemExit):
            nginxconf.render_nginx_conf(src, self.dst, 12345, self.dir + "/tmp", ["unix:/s/api01.sock"])


if __name__ == "__main__":
    unittest.main()
