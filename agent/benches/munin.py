#!/usr/bin/env python3
"""Benchmark: the agent running 30 Munin plugins and scraping one node exporter
beside munin-node running the same plugins and Prometheus scraping the same
exporter, in the same run (see docs/benchmarks.md, "Munin plugins").

Run as root, with munin-node and munin-plugins-core installed and the release
agent built (cargo build --release -p metrolog-agent):

    python3 agent/benches/munin.py [--interval 60] [--rounds 3]

The plugins are those of /etc/munin/plugins (Debian's installation enables
29) plus `if_lo`, with /etc/munin/plugin-conf.d: 30. munin-node reads no
other plugin directory, so it runs in a mount namespace of its own where the
bench's directory is bind-mounted over /etc/munin/plugins (unshare(1));
nothing of the machine changes. The agent runs them with [munin] at `interval` (its
server address is a closed port: it keeps its batches and retries, which is
part of what it costs). munin-node is driven as munin-update drives it:
every `interval`, one connection asking `config` then `fetch` for every
plugin. With --scrape (the default), Debian's prometheus-node-exporter runs
too; the agent scrapes it every 10 s ([[scrape]]) and so does Debian's
Prometheus (TSDB in a temporary directory). Reported: CPU seconds of each
side (its own process and, separately, everything it ran: plugins, forks)
and peak RSS (munin-node: its process plus its per-connection fork).
"""
import argparse, os, shutil, socket, subprocess, sys, tempfile, threading, time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TICK = os.sysconf("SC_CLK_TCK")


def cpu(pid):
    """(self, children) CPU seconds of `pid`; children only once reaped."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(") ", 1)[1].split()
    ut, st, cut, cst = (int(x) for x in fields[11:15])
    return (ut + st) / TICK, (cut + cst) / TICK


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def munin_update(port, plugins):
    """One munin-update run against munin-node: config and fetch of each plugin."""
    with socket.create_connection(("127.0.0.1", port), timeout=120) as s:
        f = s.makefile("rw")
        f.readline()  # banner
        f.write("cap multigraph dirtyconfig\n"); f.flush(); f.readline()
        for p in plugins:
            for cmd in ("config", "fetch"):
                f.write(f"{cmd} {p}\n"); f.flush()
                while f.readline().rstrip("\n") != ".":
                    pass
        f.write("quit\n"); f.flush()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--interval", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-scrape", dest="scrape", action="store_false",
                    help="Munin only: no node exporter, no Prometheus")
    args = ap.parse_args()
    agent_bin = os.path.join(ROOT, "target/release/metrolog-agent")
    needs = [agent_bin, "/usr/sbin/munin-node", "/etc/munin/plugins", "/usr/bin/unshare"]
    if args.scrape:
        needs += ["/usr/bin/prometheus-node-exporter", "/usr/bin/prometheus"]
    for need in needs:
        if not os.path.exists(need):
            sys.exit(f"{need} is missing (build the release agent; apt-get install munin-node "
                     "munin-plugins-core util-linux prometheus-node-exporter prometheus)")
    tmp = tempfile.mkdtemp(prefix="munin-bench-")
    os.chmod(tmp, 0o755)
    plugins_dir, conf_dir = os.path.join(tmp, "plugins"), "/etc/munin/plugin-conf.d"
    os.mkdir(plugins_dir)
    os.chmod(plugins_dir, 0o755)
    for name in os.listdir("/etc/munin/plugins"):
        src = os.path.join("/etc/munin/plugins", name)
        os.symlink(os.readlink(src) if os.path.islink(src) else src, os.path.join(plugins_dir, name))
    if not os.path.exists(os.path.join(plugins_dir, "if_lo")):
        os.symlink("/usr/share/munin/plugins/if_", os.path.join(plugins_dir, "if_lo"))
    plugins = sorted(os.listdir(plugins_dir))
    procs = []
    scrape_toml = ""
    if args.scrape:
        exporter_port, prom_port = free_port(), free_port()
        procs.append(subprocess.Popen(
            ["/usr/bin/prometheus-node-exporter", f"--web.listen-address=127.0.0.1:{exporter_port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        with open(os.path.join(tmp, "prometheus.yml"), "w") as f:
            f.write("global:\n  scrape_interval: 10s\n  scrape_timeout: 5s\nscrape_configs:\n"
                    f"  - job_name: node\n    static_configs:\n      - targets: ['127.0.0.1:{exporter_port}']\n")
        prometheus = subprocess.Popen(
            ["/usr/bin/prometheus", f"--config.file={tmp}/prometheus.yml",
             f"--storage.tsdb.path={tmp}/tsdb", f"--web.listen-address=127.0.0.1:{prom_port}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(prometheus)
        scrape_toml = (f'[[scrape]]\nname = "node"\nurl = "http://127.0.0.1:{exporter_port}/metrics"\n'
                       'interval = "10s"\n')

    port = free_port()
    node_conf = os.path.join(tmp, "munin-node.conf")
    with open(node_conf, "w") as f:
        f.write(f"log_level 4\nlog_file {tmp}/munin-node.log\npid_file {tmp}/munin-node.pid\n"
                "background 0\nsetsid 0\nuser root\ngroup root\n"
                "ignore_file [\\#~]$\nignore_file DEADJOE$\nignore_file \\.bak$\nignore_file %$\n"
                "ignore_file \\.dpkg-(tmp|new|old|dist)$\nignore_file \\.rpm(save|new)$\nignore_file \\.pod$\n"
                f"allow ^127\\.0\\.0\\.1$\nhost 127.0.0.1\nport {port}\n")
    # unshare execs sh, which execs munin-node: one pid throughout.
    node = subprocess.Popen(["/usr/bin/unshare", "--mount", "--propagation", "private", "sh", "-c",
                             f"mount --bind {plugins_dir} /etc/munin/plugins && "
                             f"exec /usr/sbin/munin-node --config {node_conf}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    agent_toml = os.path.join(tmp, "agent.toml")
    with open(agent_toml, "w") as f:
        f.write(f'[munin]\nplugins_dir = "{plugins_dir}"\nconf_dir = "{conf_dir}"\n'
                f'plugstate_dir = "{tmp}/plugstate"\ninterval = "{args.interval}s"\n' + scrape_toml)
    env = dict(os.environ, RUST_LOG="warn")
    agent = subprocess.Popen([agent_bin, "--server", "http://127.0.0.1:9", "--enroll-token", "bench",
                              "--hostname", "bench", "--state-dir", f"{tmp}/state", "--config", agent_toml],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        deadline = time.time() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.time() > deadline:
                    sys.exit("munin-node did not start")
                time.sleep(0.1)
        peak = {"agent": 0, "node": 0, "prom": 0}
        stop = threading.Event()

        def watch():
            while not stop.is_set():
                peak["agent"] = max(peak["agent"], rss_kib(agent.pid))
                peak["node"] = max(peak["node"], rss_kib(node.pid) + sum(rss_kib(c) for c in children(node.pid)))
                if args.scrape:
                    peak["prom"] = max(peak["prom"], rss_kib(prometheus.pid))
                stop.wait(0.2)

        threading.Thread(target=watch, daemon=True).start()
        if args.scrape:
            time.sleep(15)  # Prometheus' start and both sides' first scrapes
        a0, n0, t0 = cpu(agent.pid), cpu(node.pid), time.time()
        p0 = cpu(prometheus.pid) if args.scrape else (0, 0)
        for r in range(args.rounds):
            started = time.time()
            munin_update(port, plugins)
            took = time.time() - started
            stop.wait(max(0.0, args.interval - took))
        time.sleep(2)
        a1, n1, wall = cpu(agent.pid), cpu(node.pid), time.time() - t0
        p1 = cpu(prometheus.pid) if args.scrape else (0, 0)
        stop.set()
    finally:
        for p in [agent, node] + procs:
            p.terminate()
        for p in [agent, node] + procs:
            p.wait(10)
    a_self, a_kids = a1[0] - a0[0], a1[1] - a0[1]
    n_self, n_kids = n1[0] - n0[0], n1[1] - n0[1]
    print(f"{len(plugins)} plugins, interval {args.interval}s, {args.rounds} rounds, {wall:.0f}s wall")
    print("| | own CPU s | plugins' CPU s | peak RSS MiB |")
    print("| --- | --- | --- | --- |")
    print(f"| metrolog-agent | {a_self:.2f} | {a_kids:.2f} | {peak['agent'] / 1024:.1f} |")
    print(f"| munin-node | {n_self:.2f} | {n_kids:.2f} | {peak['node'] / 1024:.1f} |")
    p_self = p1[0] - p0[0]
    if args.scrape:
        print(f"| prometheus | {p_self:.2f} | - | {peak['prom'] / 1024:.1f} |")
    total_a, total_n = a_self + a_kids, n_self + n_kids
    if total_n > 0 and peak["node"] > 0:
        print(f"ratio agent/munin-node: total CPU {total_a / total_n:.2f}, peak RSS {peak['agent'] / peak['node']:.2f}")
    if args.scrape and total_n + p_self > 0:
        print(f"ratio agent/(munin-node + prometheus): total CPU {total_a / (total_n + p_self):.2f}, "
              f"peak RSS {peak['agent'] / (peak['node'] + peak['prom']):.2f}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
