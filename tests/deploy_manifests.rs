//! The deployment files in `deploy/` parse and agree with each other: the
//! Kubernetes manifests (names, labels, ports, the Secret and its keys, the
//! volume claim) and docker-compose.yml (services, secrets, the coordinator
//! address). Where the release binaries are built, every `--flag` the files
//! pass to a binary must appear in that binary's `--help`, so a renamed flag
//! breaks this test instead of a deployment.
//!
//! No cluster and no Docker needed: it reads files (and runs `--help`).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use serde_json::Value;
use sweep_e2e::{release_bin_dir, repo_root};

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
