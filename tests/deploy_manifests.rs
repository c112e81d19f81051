//! The deployment files in `deploy/` parse and agree with each other: the
//! Kubernetes manifests (names, labels, ports, the Secret and its keys, the
//! volume claim) and docker-compose.yml (services, secrets, the coordinator
//! address). Where the release binaries are built, every `--flag` the files
//! pass to a binary must appear in that binary's `--help`, so a renamed flag
//! breaks this test instead of a deployment.
//!
//! No cluster and no Docker needed: it reads files, runs `--help`, and runs
//! kubectl against a stand-in API server (below).
//!
//! Then `kubectl apply --dry-run=client` takes every manifest, and the
//! kustomization (`-k`). Even in client mode kubectl asks an API server for
//! discovery (which kinds exist, under which apiVersion) and for each object
//! (to choose create or patch); with no cluster here, the test serves it a fake
//! one on loopback: the discovery documents of the built-in kinds and 404 for
//! every object, so each one comes out "created (dry run)". That checks that
//! kubectl (and its kustomize) reads every file, that each kind and apiVersion
//! is one Kubernetes serves, and which objects each way of applying creates.
//! It does not check fields against the API's schema (`--validate=false`:
//! kubectl fetches that schema from the server as protobuf OpenAPI, which the
//! fake does not have); see deploy/README.md for what met a cluster.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::Command;

use serde_json::Value;
use sweep_e2e::{release_bin_dir, repo_root};
use sweep_testkit::skip_or_fail;

fn read(rel: &str) -> String {
    let path = repo_root().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every YAML document of a file, as generic values.
fn docs(rel: &str) -> Vec<Value> {
    let docs: Vec<Value> =
        serde_saphyr::from_multiple(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

/// The one document of `kind` in the k8s directory.
fn k8s_object<'a>(all: &'a [(String, Value)], kind: &str) -> &'a Value {
    let found: Vec<&Value> = all
        .iter()
        .filter(|(_, d)| d["kind"] == kind)
        .map(|(_, d)| d)
        .collect();
    assert_eq!(found.len(), 1, "exactly one {kind} in deploy/k8s");
    found[0]
}

fn k8s_all() -> Vec<(String, Value)> {
    let dir = repo_root().join("deploy/k8s");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("deploy/k8s")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        // kustomize's own file is no API object; checked on its own below.
        .filter(|p| p.file_name().is_some_and(|n| n != "kustomization.yaml"))
        .collect();
    files.sort();
    let mut all = Vec::new();
    for file in files {
        let rel = format!("deploy/k8s/{}", file.file_name().unwrap().to_string_lossy());
        for doc in docs(&rel) {
            all.push((rel.clone(), doc));
        }
    }
    all
}

fn str_of<'a>(v: &'a Value, what: &str) -> &'a str {
    v.as_str()
        .unwrap_or_else(|| panic!("{what} is a string, got {v}"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The `--flag` names in an argument list (`--flag=value` or `--flag value`).
fn flags(args: &[String]) -> BTreeSet<String> {
    args.iter()
        .filter(|a| a.starts_with("--"))
        .map(|a| a.split('=').next().unwrap().to_string())
        .collect()
}

/// Checks `flags` against `<bin> --help` when the binary is built.
fn assert_flags_exist(bin: &str, flags: &BTreeSet<String>, source: &str) {
    let path = release_bin_dir().join(bin);
    if !path.is_file() {
        eprintln!(
            "note: {} not built; flags of {source} not checked against it",
            path.display()
        );
        return;
    }
    let out = Command::new(&path)
        .arg("--help")
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(
        out.status.success(),
        "{bin} --help failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let help = String::from_utf8_lossy(&out.stdout);
    // The whole flag: `--thread` must not pass because `--threads` exists.
    let listed = |flag: &str| {
        help.match_indices(flag).any(|(i, _)| {
            !help[i + flag.len()..]
                .starts_with(|c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
    };
    for flag in flags {
        assert!(
            listed(flag),
            "{source} passes {flag} to {bin}, whose --help does not list it:\n{help}"
        );
    }
}

#[test]
fn k8s_manifests_parse_and_agree() {
    let all = k8s_all();
    for (file, doc) in &all {
        for key in ["apiVersion", "kind"] {
            assert!(
                doc[key].is_string(),
                "{file}: a document without {key}: {doc}"
            );
        }
        assert!(
            doc["metadata"]["name"].is_string(),
            "{file}: {} without metadata.name",
            doc["kind"]
        );
    }

    // One namespace for everything.
    let namespace = str_of(
        &k8s_object(&all, "Namespace")["metadata"]["name"],
        "Namespace name",
    );
    for (file, doc) in &all {
        if doc["kind"] != "Namespace" {
            assert_eq!(
                doc["metadata"]["namespace"], namespace,
                "{file}: {} in namespace {namespace}",
                doc["kind"]
            );
        }
    }

    let service = k8s_object(&all, "Service");
    let sts = k8s_object(&all, "StatefulSet");
    let deploy = k8s_object(&all, "Deployment");
    let secret = k8s_object(&all, "Secret");
    let service_name = str_of(&service["metadata"]["name"], "Service name");
    let secret_name = str_of(&secret["metadata"]["name"], "Secret name");
    let secret_keys: BTreeSet<String> = secret["stringData"]
        .as_object()
        .expect("Secret stringData")
        .keys()
        .cloned()
        .collect();
    assert_eq!(
        secret_keys,
        BTreeSet::from(["admin_token".to_string(), "worker_token".to_string()])
    );

    // Selectors pick their own pods, and the Service picks the coordinator's.
    for workload in [sts, deploy] {
        let selector = workload["spec"]["selector"]["matchLabels"]
            .as_object()
            .expect("matchLabels");
        let labels = &workload["spec"]["template"]["metadata"]["labels"];
        for (k, v) in selector {
            assert_eq!(
                &labels[k], v,
                "{} template labels match its selector",
                workload["kind"]
            );
        }
    }
    let sts_labels = &sts["spec"]["template"]["metadata"]["labels"];
    for (k, v) in service["spec"]["selector"]
        .as_object()
        .expect("Service selector")
    {
        assert_eq!(
            &sts_labels[k], v,
            "the Service selects the coordinator pods"
        );
    }
    assert_eq!(
        sts["spec"]["serviceName"], service_name,
        "StatefulSet serviceName is the Service"
    );
    assert_eq!(
        sts["spec"]["replicas"], 1,
        "exactly one coordinator (one SQLite state)"
    );

    // Ports: Service -> named container port -> the address the coordinator listens on and the probes.
    let service_port = &service["spec"]["ports"][0];
    let port = service_port["port"].as_u64().expect("Service port");
    let coordinator = &sts["spec"]["template"]["spec"]["containers"][0];
    let container_port = coordinator["ports"]
        .as_array()
        .expect("coordinator ports")
        .iter()
        .find(|p| {
            p["name"] == service_port["targetPort"]
                || p["containerPort"] == service_port["targetPort"]
        })
        .unwrap_or_else(|| {
            panic!(
                "the Service's targetPort {} is a coordinator port",
                service_port["targetPort"]
            )
        });
    let container_port = container_port["containerPort"]
        .as_u64()
        .expect("containerPort");
    let coordinator_cmd = strings(&coordinator["command"]);
    assert!(
        coordinator_cmd
            .iter()
            .any(|a| a == &format!("--listen=0.0.0.0:{container_port}")),
        "the coordinator listens on its containerPort {container_port}: {coordinator_cmd:?}"
    );
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(
            coordinator[probe]["grpc"]["port"], container_port,
            "{probe} is a gRPC health check on {container_port}"
        );
    }

    // The state dir lives on the claim.
    let claim = str_of(
        &sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"],
        "claim name",
    );
    let state_dir = coordinator_cmd
        .iter()
        .find_map(|a| a.strip_prefix("--state-dir="))
        .expect("coordinator --state-dir");
    let mounts = coordinator["volumeMounts"]
        .as_array()
        .expect("coordinator volumeMounts");
    let state_mount = mounts
        .iter()
        .find(|m| m["name"] == claim)
        .expect("the claim is mounted");
    assert!(
        Path::new(state_dir).starts_with(str_of(&state_mount["mountPath"], "mountPath")),
        "--state-dir {state_dir} is on the persistent volume"
    );

    // Workers reach the Service on its port, with requests, as many as wanted.
    let worker = &deploy["spec"]["template"]["spec"]["containers"][0];
    let worker_cmd = strings(&worker["command"]);
    assert!(
        worker_cmd
            .iter()
            .any(|a| a == &format!("--connect={service_name}:{port}")),
        "workers connect to {service_name}:{port}: {worker_cmd:?}"
    );
    assert!(
        worker["resources"]["requests"]["cpu"].is_string(),
        "workers request CPUs"
    );
    assert!(
        read("deploy/k8s/worker.yaml").contains("nvidia.com/gpu"),
        "worker.yaml documents the GPU variant"
    );

    // Token files: each *_TOKEN_FILE points into a mounted volume of the Secret,
    // at a key the Secret has; a worker gets the worker token only.
    for (who, container, pod) in [
        ("coordinator", coordinator, &sts["spec"]["template"]["spec"]),
        ("worker", worker, &deploy["spec"]["template"]["spec"]),
    ] {
        let volumes = pod["volumes"].as_array().expect("volumes");
        let token_files: Vec<&str> = container["env"]
            .as_array()
            .expect("env")
            .iter()
            .filter(|e| {
                e["name"]
                    .as_str()
                    .is_some_and(|n| n.ends_with("TOKEN_FILE"))
            })
            .map(|e| str_of(&e["value"], "token file"))
            .collect();
        assert!(!token_files.is_empty(), "{who} gets a token file");
        for file in token_files {
            let (dir, key) = file.rsplit_once('/').unwrap();
            let mount = container["volumeMounts"]
                .as_array()
                .expect("volumeMounts")
                .iter()
                .find(|m| m["mountPath"] == dir)
                .unwrap_or_else(|| panic!("{who}: {file} is in a mounted volume"));
            let volume = volumes
                .iter()
                .find(|v| v["name"] == mount["name"])
                .expect("the mount's volume");
            assert_eq!(
                volume["secret"]["secretName"], secret_name,
                "{who}: {file} comes from the Secret"
            );
            let items = volume["secret"]["items"].as_array();
            let visible: BTreeSet<String> = match items {
                Some(items) => items
                    .iter()
                    .map(|i| str_of(&i["path"], "item path").to_string())
                    .collect(),
                None => secret_keys.clone(),
            };
            assert!(
                visible.contains(key),
                "{who}: {key} is a key of the Secret it mounts"
            );
            if who == "worker" {
                assert!(
                    !visible.contains("admin_token"),
                    "a worker pod never sees the admin token"
                );
            }
        }
    }

    // Kustomize lists every manifest but the example Secret.
    let kustomization = &docs("deploy/k8s/kustomization.yaml")[0];
    for resource in strings(&kustomization["resources"]) {
        assert!(
            repo_root().join("deploy/k8s").join(&resource).is_file(),
            "kustomization lists {resource}"
        );
    }

    assert_flags_exist(
        "sweep-coordinator",
        &flags(&coordinator_cmd[1..]),
        "deploy/k8s/coordinator.yaml",
    );
    assert_flags_exist(
        "sweep-worker",
        &flags(&worker_cmd[1..]),
        "deploy/k8s/worker.yaml",
    );
}

#[test]
fn compose_file_parses_and_agrees() {
    let compose = &docs("deploy/docker-compose.yml")[0];
    let services = compose["services"].as_object().expect("services");
    let coordinator = &services["coordinator"];
    let coordinator_cmd = strings(&coordinator["command"]);
    assert_eq!(coordinator_cmd[0], "sweep-coordinator");
    let listen = coordinator_cmd
        .iter()
        .find_map(|a| a.strip_prefix("--listen="))
        .expect("--listen");
    let port = listen.rsplit_once(':').expect("host:port").1;
    assert!(
        listen.starts_with("0.0.0.0:"),
        "the coordinator listens on the private network"
    );
    assert!(
        strings(&coordinator["ports"])
            .iter()
            .any(|p| p.starts_with("127.0.0.1:") && p.ends_with(&format!(":{port}"))),
        "the coordinator's port is published on the host's loopback only"
    );
    assert!(
        strings(&coordinator["volumes"])
            .iter()
            .any(|v| v.starts_with("state:")),
        "state on the named volume"
    );
    assert!(
        compose["volumes"].get("state").is_some(),
        "the state volume is declared"
    );

    let secrets = compose["secrets"].as_object().expect("secrets");
    let workers: Vec<(&String, &Value)> = services
        .iter()
        .filter(|(name, _)| name.starts_with("worker"))
        .collect();
    assert_eq!(workers.len(), 2, "two workers");
    for (name, worker) in &workers {
        let cmd = strings(&worker["command"]);
        assert_eq!(cmd[0], "sweep-worker", "{name}");
        assert_eq!(
            worker["environment"]["SWEEP_COORDINATOR"],
            format!("coordinator:{port}"),
            "{name} reaches the coordinator"
        );
        assert_eq!(
            strings(&worker["secrets"]),
            ["worker_token"],
            "{name} gets the worker token only"
        );
        assert_eq!(
            worker["environment"]["SWEEP_TOKEN_FILE"],
            "/run/secrets/worker_token"
        );
        assert_flags_exist(
            "sweep-worker",
            &flags(&cmd[1..]),
            &format!("docker-compose.yml {name}"),
        );
    }
    for service in services.values() {
        for secret in strings(&service["secrets"]) {
            let file = str_of(&secrets[&secret]["file"], "secret file");
            assert!(
                file.starts_with("./secrets/"),
                "secret {secret} comes from deploy/secrets (made by make-secrets.sh)"
            );
        }
    }
    // Only ${VAR} / ${VAR:-default} interpolation is used: the flags are literal.
    let literal: Vec<String> = coordinator_cmd[1..]
        .iter()
        .map(|a| a.split("=${").next().unwrap().to_string())
        .collect();
    assert_flags_exist(
        "sweep-coordinator",
        &flags(&literal),
        "docker-compose.yml coordinator",
    );
}

/// The built-in kinds the fake API server knows, as a Kubernetes 1.32 server
/// serves them: (group/version, resource, kind, namespaced). A manifest of any
/// other kind or apiVersion makes kubectl fail ("no matches for kind"); add
/// it here only if a real server serves it under that apiVersion.
const KINDS: [(&str, &str, &str, bool); 12] = [
    ("v1", "namespaces", "Namespace", false),
    ("v1", "services", "Service", true),
    ("v1", "secrets", "Secret", true),
    ("v1", "configmaps", "ConfigMap", true),
    (
        "v1",
        "persistentvolumeclaims",
        "PersistentVolumeClaim",
        true,
    ),
    ("v1", "pods", "Pod", true),
    ("v1", "serviceaccounts", "ServiceAccount", true),
    ("apps/v1", "deployments", "Deployment", true),
    ("apps/v1", "statefulsets", "StatefulSet", true),
    ("apps/v1", "daemonsets", "DaemonSet", true),
    ("batch/v1", "jobs", "Job", true),
    (
        "policy/v1",
        "poddisruptionbudgets",
        "PodDisruptionBudget",
        true,
    ),
];

/// The fake API server's answer to a GET of `path`: discovery documents for
/// [`KINDS`], and 404 (a Status) for everything else, every object included.
fn fake_api_response(path: &str) -> (u16, Value) {
    let path = path.split('?').next().unwrap_or(path);
    let groups: BTreeSet<&str> = KINDS
        .iter()
        .filter_map(|(gv, ..)| gv.split_once('/').map(|(g, _)| g))
        .collect();
    let resources = |gv: &str| {
        let resources: Vec<Value> = KINDS
            .iter()
            .filter(|k| k.0 == gv)
            .map(|(_, name, kind, namespaced)| {
                serde_json::json!({
                    "name": name, "singularName": kind.to_lowercase(), "namespaced": namespaced,
                    "kind": kind,
                    "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"],
                })
            })
            .collect();
        serde_json::json!({
            "kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv,
            "resources": resources,
        })
    };
    match path {
        "/api" => (
            200,
            serde_json::json!({
                "kind": "APIVersions", "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1"}],
            }),
        ),
        "/apis" => {
            let groups: Vec<Value> = groups
                .iter()
                .map(|g| {
                    let gv =
                        serde_json::json!({"groupVersion": format!("{g}/v1"), "version": "v1"});
                    serde_json::json!({"name": g, "versions": [gv.clone()], "preferredVersion": gv})
                })
                .collect();
            (
                200,
                serde_json::json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}),
            )
        }
        "/api/v1" => (200, resources("v1")),
        _ => match path.strip_prefix("/apis/") {
            Some(gv) if KINDS.iter().any(|k| k.0 == gv) => (200, resources(gv)),
            _ => (
                404,
                serde_json::json!({
                    "kind": "Status", "apiVersion": "v1", "status": "Failure",
                    "reason": "NotFound", "code": 404, "message": format!("{path} not found"),
                }),
            ),
        },
    }
}

/// Answers one HTTP/1.1 request on `stream`, then closes it.
fn serve_one(stream: TcpStream) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    // The headers, up to the blank line; kubectl only sends GETs, without a body.
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
    }
    let mut parts = request_line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
    let (code, body) = if method == "GET" {
        fake_api_response(path)
    } else {
        (405, serde_json::json!({"kind": "Status", "code": 405}))
    };
    let body = body.to_string();
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {code} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        if code == 200 { "OK" } else { "Not Found" },
        body.len()
    )?;
    stream.flush()
}

/// Starts the fake API server on a loopback port; it serves until the test
/// process ends.
fn fake_api_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fake API server");
    let port = listener.local_addr().expect("its address").port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let _ = serve_one(stream);
        }
    });
    port
}

/// `<kind>[.<group>]/<name>`, as kubectl names an object it applied.
fn applied_name(doc: &Value) -> String {
    let kind = str_of(&doc["kind"], "kind");
    let api_version = str_of(&doc["apiVersion"], "apiVersion");
    assert!(
        KINDS
            .iter()
            .any(|(gv, _, k, _)| *gv == api_version && *k == kind),
        "{api_version} {kind} is not one of KINDS"
    );
    let group = match api_version.split_once('/') {
        Some((group, _)) => format!(".{group}"),
        None => String::new(),
    };
    format!(
        "{}{group}/{}",
        kind.to_lowercase(),
        str_of(&doc["metadata"]["name"], "metadata.name")
    )
}

#[test]
fn kubectl_client_dry_run_applies_every_manifest() {
    if Command::new("kubectl")
        .args(["version", "--client"])
        .output()
        .is_err()
    {
        return skip_or_fail(
            "no kubectl on PATH (scripts/test-deps.sh installs Debian's kubernetes-client)",
        );
    }
    let port = fake_api_server();
    let home = tempfile::tempdir().expect("tempdir");
    // No kubeconfig of the user's: an empty one, and the fake server's address.
    let kubeconfig = home.path().join("kubeconfig");
    std::fs::write(&kubeconfig, "").expect("kubeconfig");
    let kubectl = |args: &[&str]| {
        let out = Command::new("kubectl")
            .arg(format!("--server=http://127.0.0.1:{port}"))
            .arg(format!(
                "--cache-dir={}",
                home.path().join("cache").display()
            ))
            .args(["apply", "--dry-run=client", "--validate=false"])
            .args(args)
            .env("KUBECONFIG", &kubeconfig)
            .env("HOME", home.path())
            .current_dir(repo_root())
            .output()
            .expect("run kubectl");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "kubectl apply --dry-run=client {args:?} failed ({}):\n{stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        let applied: BTreeSet<String> = stdout
            .lines()
            .map(|l| {
                l.strip_suffix(" created (dry run)")
                    .unwrap_or_else(|| panic!("kubectl {args:?}: unexpected line {l:?}"))
                    .to_string()
            })
            .collect();
        applied
    };

    // Every file on its own (the example Secret included): every object.
    let all = k8s_all();
    let mut files: Vec<&str> = all.iter().map(|(file, _)| file.as_str()).collect();
    files.dedup();
    let mut args = Vec::new();
    for file in &files {
        args.extend(["-f", file]);
    }
    // kubectl first: its own message names a kind it does not know.
    let applied = kubectl(&args);
    let expected: BTreeSet<String> = all.iter().map(|(_, doc)| applied_name(doc)).collect();
    assert_eq!(applied, expected, "kubectl apply -f {files:?}");

    // The kustomization: everything but the example Secret.
    let secret = applied_name(k8s_object(&all, "Secret"));
    let without_secret: BTreeSet<String> = expected.into_iter().filter(|n| *n != secret).collect();
    assert_eq!(
        kubectl(&["-k", "deploy/k8s"]),
        without_secret,
        "kubectl apply -k deploy/k8s"
    );
}
