//! Images: only pinned references run, resolved locally, never pulled implicitly, with a
//! clear error for what is missing or unpinned; the image and its configured user are
//! reported with the run.

use nanoclaw_docker::ImageInfo;
use nanoclaw_spec::{BackendError, EgressRule, IoMode, Network, Root};

use super::support::{backend, engine, test_image, Sandbox};

fn refusal(change: impl FnOnce(&mut Sandbox)) -> String {
    let mut sandbox = Sandbox::new();
    change(&mut sandbox);
    let run = sandbox.run(&["true"]);
    match run.result {
        Ok(_) => panic!("ran\n{}", run.context()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn an_image_id_runs_and_is_reported_with_its_configured_user() {
    let mut sandbox = Sandbox::new();
    let run = sandbox.run(&["id", "-u"]);
    let docker_run = run.result.as_ref().unwrap();
    assert_eq!(docker_run.outcome.stdout.text, "10001\n");
    let ImageInfo {
        reference,
        id,
        digest,
        configured_user,
        env,
    } = &docker_run.image;
    // The classic builder gives even a FROM scratch image a PATH, which the spec overrides.
    assert!(env.iter().all(|e| e.starts_with("PATH=")), "{env:?}");
    assert!(
        docker_run.outcome.warnings.is_empty(),
        "{:?}",
        docker_run.outcome.warnings
    );
    assert_eq!(reference, test_image());
    assert_eq!(id, test_image());
    assert_eq!(digest, test_image());
    // The test image names no user, so it would run as root; the spec's user wins.
    assert_eq!(configured_user, "");
    assert!(docker_run.image.user_is_root());
}

#[test]
fn last_image_reports_the_latest_resolution() {
    let backend = backend();
    assert_eq!(backend.last_image(), None);
    let mut spec = Sandbox::new().spec;
    spec.command = vec!["true".into()];
    let io = IoMode {
        stdin: false,
        capture: true,
    };
    nanoclaw_spec::Backend::run(&backend, &spec, io, &mut || Ok(())).unwrap();
    assert_eq!(
        backend.last_image().map(|i| i.id),
        Some(test_image().to_string())
    );
}

#[test]
fn an_unpinned_reference_is_refused() {
    let engine = engine();
    let tags = engine
        .block_on(engine.docker().inspect_image(test_image()))
        .unwrap()
        .repo_tags
        .unwrap_or_default();
    let tag = tags.first().cloned().unwrap();
    let error = refusal(|s| s.spec.root = Root::Image(tag.clone()));
    assert!(error.contains("is not pinned"), "{error}");
    let short_id = test_image()[..19].to_string();
    let error = refusal(|s| s.spec.root = Root::Image(short_id));
    assert!(error.contains("is not pinned"), "{error}");
}

#[test]
fn a_missing_image_names_itself_and_how_to_get_it() {
    let missing = format!("sha256:{}", "0".repeat(64));
    let error = refusal(|s| s.spec.root = Root::Image(missing.clone()));
    assert!(
        error.contains(&missing) && error.contains("docker build"),
        "{error}"
    );
    let by_digest = format!("nanoclaw-missing@sha256:{}", "0".repeat(64));
    let error = refusal(|s| s.spec.root = Root::Image(by_digest.clone()));
    assert!(
        error.contains(&by_digest) && error.contains("--pull"),
        "{error}"
    );
}

#[test]
fn a_digest_the_image_does_not_carry_is_refused() {
    // Locally built images have no registry digest, so any NAME@digest naming their ID fails.
    let tags = engine()
        .block_on(engine().docker().inspect_image(test_image()))
        .unwrap()
        .repo_tags
        .unwrap_or_default();
    let name = tags[0].split(':').next().unwrap().to_string();
    let reference = format!("{name}@{}", test_image());
    let error = refusal(|s| s.spec.root = Root::Image(reference.clone()));
    assert!(
        error.contains("not in the engine's local store")
            || error.contains("does not carry that digest"),
        "{error}"
    );
}

#[test]
fn a_host_root_is_refused_naming_the_image_option() {
    let error = refusal(|s| s.spec.root = Root::Host);
    assert!(error.contains("needs an image"), "{error}");
}

/// Egress without the runner's proxy would be open network or nothing: refused.
#[test]
fn egress_without_its_proxy_is_refused() {
    let mut sandbox = Sandbox::new();
    sandbox.spec.network = Network::Egress(vec![EgressRule {
        host: "example.com".into(),
        port: 443,
    }]);
    let run = sandbox.run(&["true"]);
    assert!(
        matches!(run.result, Err(BackendError::Invalid(_))),
        "{}",
        run.context()
    );
}
