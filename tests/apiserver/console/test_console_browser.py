"""The web console in headless Chromium (Selenium + Debian's chromedriver) on a local cluster.

One 3-node `knemu up` cluster; the page is opened once and never reloaded (a marker set in the
page's window must survive every step).  In order: the map shows the nodes and pods that exist
(seed 003 applied from the console's own tour), a scale-up appears, a trace draws its hops, a
chaos kill from the console turns the node dead and takes its endpoints out of the service.
Screenshots at laptop and phone widths go to the test's tmp_path and, when $KNEMU_ARTEFACTS is
set, are copied there.  The browser is kept off every network but the cluster's: background
services are disabled and host names resolve to nothing (the api-server is an IP address).
The fixture runs `knemu down` and checks nothing is left.
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from localcluster import LocalCluster, local_cluster

from knemu.testing import wait_until

pytestmark = [
    pytest.mark.netns,
    pytest.mark.slow,
    pytest.mark.timeout(600),
    pytest.mark.skipif(
        shutil.which("chromium") is None or shutil.which("chromedriver") is None,
        reason="Debian's chromium and chromium-driver are not installed (scripts/test installs "
        "them)",
    ),
]

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium (dev extra) is missing")
from selenium.webdriver.common.by import By  # noqa: E402

LAPTOP, PHONE = (1366, 900), (390, 844)
SAMPLE = "app=sample-app"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with local_cluster(tmp_path_factory.mktemp("knemu-state"), nodes=3) as c:
        yield c


@pytest.fixture(scope="module")
def artefacts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    out = tmp_path_factory.mktemp("console-screenshots")
    yield out
    target = os.environ.get("KNEMU_ARTEFACTS")
    if target:
        shutil.copytree(out, Path(target) / "console", dirs_exist_ok=True)


@pytest.fixture(scope="module")
def browser(cluster: LocalCluster) -> Iterator[Any]:
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium") or "chromium"
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--disable-background-networking", "--disable-sync",
                "--disable-component-update", "--disable-default-apps", "--disable-extensions",
                "--disable-domain-reliability",
                f"--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE {cluster.host_ip}",
                # trust exactly this api-server's key (its cluster CA is not the system's)
                f"--ignore-certificate-errors-spki-list={serving_spki(cluster)}",
                f"--window-size={LAPTOP[0]},{LAPTOP[1]}"):  # fmt: skip
        options.add_argument(arg)
    service = webdriver.ChromeService(executable_path=shutil.which("chromedriver"))
    driver = webdriver.Chrome(options=options, service=service)
    try:
        # the sign-in link `knemu console` prints: the token stays in the fragment
        driver.get(f"{cluster.server}/console/login#token={cluster.admin.token}")

        def signed_in() -> bool:
            return bool(
                driver.current_url == f"{cluster.server}/console/"
                and driver.execute_script("return document.readyState") == "complete"
                and driver.find_elements(By.CSS_SELECTOR, "[data-testid=status]")
            )

        wait_until(signed_in, 60, what="signed in to the console", interval_s=0.2)
        driver.execute_script("window.__notReloaded = true;")
        yield driver
    finally:
        driver.quit()


def serving_spki(cluster: LocalCluster) -> str:
    """base64(SHA-256(SubjectPublicKeyInfo)) of the api-server's certificate, as Chromium's
    --ignore-certificate-errors-spki-list takes it."""
    host, port = cluster.server.removeprefix("https://").rsplit(":", 1)
    pem = ssl.get_server_certificate((host, int(port)))
    spki = (
        x509.load_pem_x509_certificate(pem.encode())
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return base64.b64encode(hashlib.sha256(spki).digest()).decode()


def wait(driver: Any, cond: Callable[[], Any], what: str, timeout_s: float = 60) -> None:
    def ok() -> bool:
        return bool(cond())

    try:
        wait_until(ok, timeout_s, what=what, interval_s=0.2)
    except TimeoutError as exc:
        raise AssertionError(f"{exc} (page status: {status(driver)})") from None
    assert driver.execute_script("return window.__notReloaded === true;"), "the page reloaded"


def status(driver: Any) -> str:
    try:
        return str(driver.find_element(By.CSS_SELECTOR, "[data-testid=status]").text)
    except Exception as exc:  # the page may be mid-render
        return f"? ({exc})"


def map_pods(driver: Any) -> dict[str, tuple[str, str]]:
    """name -> (node, phase) of the pods drawn on the map."""
    script = """return [...document.querySelectorAll('#map g.pod')].map(
        g => [g.dataset.testid.slice(4), g.dataset.node, g.dataset.phase]);"""
    return {name: (node, phase) for name, node, phase in driver.execute_script(script)}


def map_nodes(driver: Any) -> dict[str, bool]:
    script = """return [...document.querySelectorAll('#map g.node')].map(
        g => [g.dataset.testid.slice(5), g.dataset.ready === 'true']);"""
    return dict(driver.execute_script(script))


def shoot(driver: Any, artefacts: Path, name: str) -> None:
    """Screenshots at laptop and phone widths (full page height), back to laptop after."""
    for label, (w, h) in (("laptop", LAPTOP), ("phone", PHONE)):
        driver.set_window_size(w, h)
        time.sleep(0.3)  # one frame for the map to re-render at the new width
        height = driver.execute_script("return document.documentElement.scrollHeight;")
        driver.set_window_size(w, min(max(h, int(height) + 40), 4000))
        time.sleep(0.3)
        driver.save_screenshot(str(artefacts / f"{name}-{label}.png"))
        overflow = driver.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth;"
        )
        assert overflow <= 0, f"{name}: the page is {overflow} px wider than the {label} window"
    driver.set_window_size(*LAPTOP)


def click_tab(driver: Any, panel: str) -> None:
    driver.find_element(By.CSS_SELECTOR, f"#tabs button[data-panel={panel}]").click()


def cluster_pods(c: LocalCluster) -> dict[str, tuple[str, str]]:
    return {p["metadata"]["name"]: (p["spec"].get("nodeName", ""), p["status"].get("phase", ""))
            for p in c.pods() if "deletionTimestamp" not in p["metadata"]}  # fmt: skip


def test_1_map_shows_the_nodes_and_the_pods_the_tour_applies(
    cluster: LocalCluster, browser: Any, artefacts: Path
) -> None:
    wait(browser, lambda: set(map_nodes(browser)) == {"node-1", "node-2", "node-3"}, "3 nodes")
    assert all(map_nodes(browser).values())
    node_text = browser.find_element(By.CSS_SELECTOR, "[data-testid=node-node-2]").text
    assert cluster.node_ip(2) in node_text and "10.244.2.0/24" in node_text
    click_tab(browser, "tours")
    browser.find_element(By.CSS_SELECTOR, "[data-testid=tour-apply-seed-003]").click()
    cluster.wait_ready(3, selector=SAMPLE, timeout_s=90)
    expected = {k: v for k, v in cluster_pods(cluster).items() if v[1] == "Running"}
    wait(browser, lambda: {k: v for k, v in map_pods(browser).items() if v[1] == "Running"}
         == expected, f"the map's running pods to be {expected}")  # fmt: skip
    click_tab(browser, "services")
    card = "[data-testid=service-default-sample-clusterip] [data-testid=endpoint]"
    wait(browser, lambda: len(browser.find_elements(By.CSS_SELECTOR, card)) == 3, "3 endpoints")
    shoot(browser, artefacts, "1-seed-003")


def test_2_a_scale_up_appears_without_reload(cluster: LocalCluster, browser: Any) -> None:
    cluster.knemu("scale", "deployment", "sample-deployment", "--replicas", "5")
    cluster.wait_ready(5, selector=SAMPLE, timeout_s=90)

    def five_running() -> bool:
        running = [n for n, (_, phase) in map_pods(browser).items()
                   if n.startswith("sample-deployment-") and phase == "Running"]  # fmt: skip
        return len(running) == 5

    wait(browser, five_running, "5 running sample pods on the map")
    assert {k for k, v in map_pods(browser).items() if v[1] == "Running"} == {
        k for k, v in cluster_pods(cluster).items() if v[1] == "Running"
    }


def test_3_a_trace_draws_its_hops(cluster: LocalCluster, browser: Any, artefacts: Path) -> None:
    pods = cluster_pods(cluster)
    source = next(n for n, (node, _) in sorted(pods.items()) if node == "node-1")
    target = next(n for n, (node, _) in sorted(pods.items()) if node not in ("node-1", ""))
    click_tab(browser, "trace")
    wait(browser, lambda: browser.execute_script(
        "return [...document.querySelectorAll('#trace-source option')].map(o => o.value);")
        and f"default/{source}" in browser.execute_script(
        "return [...document.querySelectorAll('#trace-source option')].map(o => o.value);"),
        "the source pod in the trace form")  # fmt: skip
    browser.execute_script(f"document.getElementById('trace-source').value = 'default/{source}';")
    dest = browser.find_element(By.CSS_SELECTOR, "[data-testid=trace-destination]")
    dest.clear()
    dest.send_keys(f"pod/{target}")
    browser.find_element(By.CSS_SELECTOR, "[data-testid=trace-run]").click()
    rows = "[data-testid=trace-hop-row]"
    wait(browser, lambda: len(browser.find_elements(By.CSS_SELECTOR, rows)) >= 3, "trace hops")
    texts = [r.text for r in browser.find_elements(By.CSS_SELECTOR, rows)]
    assert any(" encap " in t and "vni 1" in t for t in texts), texts
    assert any(pods[target][0] in t and " to-pod " in t for t in texts), texts
    markers = browser.find_elements(By.CSS_SELECTOR, "#map [data-testid=trace-hop]")
    assert len(markers) == len(texts)
    path = browser.find_element(By.CSS_SELECTOR, "#map .trace-path")
    assert len(path.get_attribute("points").split()) >= 3
    shoot(browser, artefacts, "3-trace")


def test_3b_followed_flows_show_the_service_nat(
    cluster: LocalCluster, browser: Any, artefacts: Path
) -> None:
    click_tab(browser, "flows")
    browser.find_element(By.CSS_SELECTOR, "[data-testid=flow-toggle]").click()
    filt = browser.find_element(By.ID, "flow-filter")
    filt.clear()
    filt.send_keys("sample-clusterip")
    ip = cluster.service("sample-clusterip")["spec"]["clusterIP"]
    client = next(p["metadata"]["name"] for p in cluster.pods(selector=SAMPLE))
    rows = "[data-testid=flows] li[data-verdict=TRANSLATED]"

    def seen() -> bool:
        cluster.exec(client, f"curl -s -m 2 -o /dev/null http://{ip}:8080/", timeout_s=20)
        return bool(browser.find_elements(By.CSS_SELECTOR, rows))

    wait(browser, seen, "a TRANSLATED flow of sample-clusterip in the followed flows")
    text = browser.find_element(By.CSS_SELECTOR, rows).text
    assert f"-> {ip}:8080 => 10.244." in text, text  # the backend kube-proxy picked
    assert "[dnat" in text and "service default/sample-clusterip" in text, text
    shoot(browser, artefacts, "3b-flows")
    browser.find_element(By.CSS_SELECTOR, "[data-testid=flow-toggle]").click()  # stop


def link_states(driver: Any) -> dict[str, str]:
    return dict(
        driver.execute_script("""return [...document.querySelectorAll(
        '#map g[data-state]')].map(g => [g.dataset.testid, g.dataset.state]);""")
    )


def chaos_click(driver: Any, action: str, node: str, peer: str = "") -> None:
    """Choose the node (and peer), press the action's button and confirm its dialog."""
    click_tab(driver, "chaos")
    driver.execute_script(f"document.getElementById('chaos-node').value = '{node}';"
                          f"document.getElementById('chaos-peer').value = '{peer}';")  # fmt: skip
    driver.find_element(By.CSS_SELECTOR, f"#chaos-form button[data-action={action}]").click()
    if action != "heal":
        alert = driver.switch_to.alert
        assert node in alert.text
        alert.accept()


def test_4_partition_and_delay_are_drawn_on_the_links_then_healed(
    cluster: LocalCluster, browser: Any, artefacts: Path
) -> None:
    chaos_click(browser, "partition", "node-1", "node-2")
    wait(browser, lambda: link_states(browser).get("link-node-1-node-2") == "dead",
         "the node-1 <-> node-2 link drawn cut")  # fmt: skip
    assert link_states(browser)["link-node-1-node-3"] == "ok"
    chaos_click(browser, "delay", "node-3")
    wait(browser, lambda: link_states(browser).get("link-node-2-node-3") == "impaired",
         "node-3's links drawn impaired")  # fmt: skip
    assert "delay 200ms" in browser.find_element(By.CSS_SELECTOR, "[data-testid=node-node-3]").text
    shoot(browser, artefacts, "4-partition-delay")
    chaos_click(browser, "heal", "")
    wait(browser, lambda: set(link_states(browser).values()) == {"ok"}, "every link healed")


def test_5_a_frozen_node_is_drawn_unreachable_then_thaws(
    cluster: LocalCluster, browser: Any
) -> None:
    browser.execute_script("document.getElementById('chaos-seconds').value = '6';")
    chaos_click(browser, "freeze", "node-2")
    wait(browser, lambda: map_nodes(browser).get("node-2") is False, "node-2 drawn frozen", 20)
    wait(browser, lambda: map_nodes(browser).get("node-2") is True, "node-2 thawed", 60)


def test_6_a_chaos_kill_shows_the_node_dead_and_its_endpoints_gone(
    cluster: LocalCluster, browser: Any, artefacts: Path
) -> None:
    victim = "node-3"
    ips = {p["status"]["podIP"] for p in cluster.pods(selector=SAMPLE)
           if p["spec"].get("nodeName") == victim}  # fmt: skip
    assert ips, "seed 003 with 5 replicas has pods on node-3"
    chaos_click(browser, "kill", victim)
    log = "[data-testid=chaos-log] li"
    wait(browser, lambda: "killed" in browser.find_element(By.CSS_SELECTOR, log).text,
         "the kill's line at the top of the chaos log")  # fmt: skip
    wait(browser, lambda: map_nodes(browser).get(victim) is False, f"{victim} drawn dead")
    click_tab(browser, "services")

    def endpoints_gone() -> bool:
        ready = browser.execute_script("""return [...document.querySelectorAll(
            '[data-testid=service-default-sample-clusterip] .ep:not(.notready)')]
            .map(e => e.dataset.ip);""")
        return not ips & set(ready)

    wait(browser, endpoints_gone, f"{victim}'s endpoints {ips} out of the service", 60)
    dead_links = browser.execute_script("""return [...document.querySelectorAll(
        '#map [data-state=dead]')].map(g => g.dataset.testid);""")
    assert sorted(dead_links) == ["link-node-1-node-3", "link-node-2-node-3"]
    shoot(browser, artefacts, "6-node-killed")


def test_7_the_network_policy_tour_applies_its_steps_and_the_trace_shows_the_drop(
    cluster: LocalCluster, browser: Any, artefacts: Path
) -> None:
    click_tab(browser, "tours")
    tour = "[data-testid=tour-seed-001-network-policy]"
    browser.find_element(
        By.CSS_SELECTOR, "[data-testid=tour-apply-seed-001-network-policy]"
    ).click()
    cluster.wait_ready(2, selector="role in (frontend, stranger)", timeout_s=90)
    wait(browser, lambda: map_pods(browser).get("frontend", ("", ""))[1] == "Running",
         "frontend on the map")  # fmt: skip
    steps = browser.find_elements(By.CSS_SELECTOR, f"{tour} ol > li button")
    assert [b.text for b in steps] == ["look", "apply", "apply"]
    steps[1].click()  # default-deny-ingress, and the trace form filled in for frontend
    policies = "/apis/networking.k8s.io/v1/namespaces/default/networkpolicies"
    wait_until(lambda: bool(cluster.get(policies)["items"]), 30, what="the policy applied")
    assert browser.find_element(By.ID, "trace-source").get_attribute("value") == "default/frontend"
    rows = "[data-testid=trace-hop-row]"

    def dropped_by_policy() -> bool:
        browser.find_element(By.CSS_SELECTOR, "[data-testid=trace-run]").click()
        time.sleep(1.5)  # the trace collects hops for 0.5 s on each node
        return any("policy_denied" in r.text for r in browser.find_elements(By.CSS_SELECTOR, rows))

    # Every node's agent learns the policy from its watch: retry until the replica's node drops.
    wait_until(
        dropped_by_policy,
        60,
        what="a trace hop DROPPED with reason policy_denied",
        interval_s=0.5,
    )
    shoot(browser, artefacts, "7-network-policy")
