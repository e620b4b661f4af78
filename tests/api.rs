//! The client and server APIs used as a library, with bytes in between (what a service moves
//! over the network): keys, inputs and outputs serialized by one side and read by the other,
//! the result checked against the plaintext model, and the checks that bind results to their
//! client and request.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code may fail loudly

use hecc::client::{Authenticity, Client, KeySource};
use hecc::compile::{compile, CompileOptions};
use hecc::run::{load_images, Session};
use hecc::server::{ProgressEvent, ProgressSink, RunOptions, Server};
use hecc_passes::params::Security;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A small insecure CryptoNets plan (N = 2^12) for 8 images.
fn plan() -> hecc_passes::plan::Plan {
    let opts = CompileOptions {
        security: Security::InsecureNone,
        min_log_n: 12,
        layout: hecc::compile::LayoutChoice::Batch,
        batch: Some(8),
        ..Default::default()
    };
    compile(&root().join("models/cryptonets.yaml"), &opts)
        .unwrap()
        .plan
}

fn session(p: &hecc_passes::plan::Plan) -> Session {
    Session::with_security(p.clone(), true).unwrap()
}

#[test]
fn a_client_and_a_server_exchange_bytes_and_agree_with_the_plaintext_model() {
    let plan = plan();
    let (mut client, eval) = Client::generate(session(&plan)).unwrap();
    // The server is built from the key bytes alone.
    let key_bytes = client.eval_keys_bytes(&eval);
    drop(eval);
    let server = Server::from_key_bytes(session(&plan), &key_bytes, "uploaded keys").unwrap();

    let spec = client.session().input().unwrap().clone();
    let images = load_images(
        &root().join("models/data/mnist-t10k-first256-images-idx3-ubyte"),
        &spec,
    )
    .unwrap()
    .take(8);
    let images = client.images_from_values(images.data, 8).unwrap();
    let inputs = client.encrypt(&images).unwrap();
    let sent = client.inputs_bytes(&inputs).unwrap();

    let received = server.inputs_from_bytes(&sent, "upload").unwrap();
    let events = Arc::new(Mutex::new(Vec::new()));
    let log = events.clone();
    let opts = RunOptions {
        progress: Some(ProgressSink::new(move |e: &ProgressEvent<'_>| {
            if let ProgressEvent::Nodes { done, .. } = e {
                log.lock().unwrap().push(*done);
            }
        })),
        memory_limit: None,
        ..Default::default()
    };
    let (outputs, report) = server.run(received, &opts).unwrap();
    assert!(report.nodes > 0);
    let done = events.lock().unwrap().clone();
    assert!(
        done.windows(2).all(|w| w[0] <= w[1]) && done.last().copied() == Some(report.nodes as u64),
        "progress counts up to the node count: {done:?}"
    );
    let returned = server.outputs_bytes(&outputs).unwrap();

    let outputs = hecc::client::outputs_from_bytes(&returned, "download").unwrap();
    let d = client
        .decrypt(&outputs, Some(("the request", &sent)))
        .unwrap();
    assert_eq!(d.authenticity, Authenticity::Tagged);
    assert_eq!((d.logits.images, d.logits.classes), (8, 10));

    // The plaintext model on the same images.
    let g = hecc_ir::front::load_model(&root().join("models/cryptonets.yaml")).unwrap();
    let x = hecc_ir::tensor::Tensor::from_shape_vec(
        std::iter::once(8)
            .chain(spec.shape.iter().copied())
            .collect::<Vec<_>>(),
        images.data.clone(),
    )
    .unwrap();
    let want = hecc_ir::tensor::eval::eval_batch(&g, &[x]).unwrap();
    let want: Vec<f64> = want[0].iter().copied().collect();
    let err = d
        .logits
        .values
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    let scale = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
    let bits = (scale / err).log2();
    assert!(
        bits > 8.0,
        "output precision {bits:.1} bits (error {err:e})"
    );
}

#[test]
fn results_are_bound_to_their_client_and_request() {
    let plan = plan();
    let (mut alice, alice_eval) = Client::generate(session(&plan)).unwrap();
    let (bob, _bob_eval) = Client::generate(session(&plan)).unwrap();
    let server = Server::new(session(&plan), alice_eval).unwrap();
    let values = vec![0.0; 784 * 2];
    let first = alice
        .encrypt(&alice.images_from_values(values.clone(), 2).unwrap())
        .unwrap();
    let first_bytes = alice.inputs_bytes(&first).unwrap();
    let second = alice
        .encrypt(&alice.images_from_values(values, 2).unwrap())
        .unwrap();
    let second_bytes = alice.inputs_bytes(&second).unwrap();
    let (out, _) = server
        .run(
            server.inputs_from_bytes(&first_bytes, "first").unwrap(),
            &RunOptions::default(),
        )
        .unwrap();

    // Another client's key cannot decrypt it, and says why.
    let e = bob.decrypt(&out, None).unwrap_err();
    assert!(format!("{e:?}").contains("key"), "{e:?}");
    // It answers the first request, not the second.
    let e = alice
        .decrypt(&out, Some(("the second request", &second_bytes)))
        .unwrap_err();
    assert!(
        format!("{e:?}").contains("does not answer the request"),
        "{e:?}"
    );
    assert!(alice
        .decrypt(&out, Some(("the first request", &first_bytes)))
        .is_ok());
    // Inputs with another key set are refused by the server before running.
    let (mut carol, _) = Client::generate(session(&plan)).unwrap();
    let theirs = carol
        .encrypt(&carol.images_from_values(vec![0.0; 784], 1).unwrap())
        .unwrap();
    let bytes = carol.inputs_bytes(&theirs).unwrap();
    let x = server.inputs_from_bytes(&bytes, "carol's upload").unwrap();
    assert!(server.run(x, &RunOptions::default()).is_err());
    // Values outside the plan's input range or of the wrong size are refused by the client.
    assert!(alice.images_from_values(vec![f64::NAN; 784], 1).is_err());
    assert!(alice.images_from_values(vec![0.0; 783], 1).is_err());
}

#[test]
fn a_key_directory_opens_with_the_secret_key_or_the_public_key() {
    let plan = plan();
    let dir = std::env::temp_dir().join(format!("hecc-api-keys-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (client, eval) = Client::generate(session(&plan)).unwrap();
    let (sk, ek) = client.write_key_dir(&eval, &dir).unwrap();
    let (_, source) = Client::open_key_dir(session(&plan), &dir, false).unwrap();
    assert_eq!(source, KeySource::Secret);
    // Without the secret key, encryption falls back to the public key, and decryption is
    // impossible.
    let public_dir = dir.join("public");
    std::fs::create_dir_all(&public_dir).unwrap();
    std::fs::copy(&ek, public_dir.join(hecc::run::EVAL_KEYS_FILE)).unwrap();
    let (public, source) = Client::open_key_dir(session(&plan), &public_dir, false).unwrap();
    assert_eq!(source, KeySource::Public);
    assert!(public.secret().is_err());
    // A secret key next to another keygen's evaluation keys is refused.
    let (other, other_eval) = Client::generate(session(&plan)).unwrap();
    let mixed = dir.join("mixed");
    other.write_key_dir(&other_eval, &mixed).unwrap();
    std::fs::copy(&sk, mixed.join(hecc::run::SECRET_KEY_FILE)).unwrap();
    let Err(e) = Client::open_key_dir(session(&plan), &mixed, true) else {
        panic!("a secret key of another keygen was accepted");
    };
    assert!(format!("{e:?}").contains("different keygens"), "{e:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
