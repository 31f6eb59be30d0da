//! One contract, two stores: a local directory and a real S3 server (MinIO on loopback).

use super::*;
use switchboard_testkit::s3::{BUCKET, S3Server};

fn s3_config(server: &S3Server) -> S3Config {
    S3Config {
        bucket: BUCKET.to_owned(),
        endpoint: Some(server.endpoint()),
        region: "us-east-1".to_owned(),
        access_key_id: server.access_key().to_owned(),
        secret_access_key: server.secret_key().to_owned(),
    }
}

async fn collect(stream: ByteStream) -> Vec<u8> {
    let chunks: Vec<Bytes> = stream.try_collect().await.expect("stream");
    chunks.concat()
}

fn pattern(len: usize, seed: u8) -> Bytes {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect::<Vec<u8>>()
        .into()
}

async fn contract(store: &Store) {
    store.probe().await.expect("probe");
    // a multipart upload: parts in order, the first at S3's minimum part size
    let first = pattern(5 * 1024 * 1024, 1);
    let last = pattern(1000, 2);
    let upload = store.begin("objects/m1.0").await.expect("begin");
    let p0 = store
        .put_part("objects/m1.0", &upload, 0, first.clone())
        .await
        .expect("part 0");
    let p1 = store
        .put_part("objects/m1.0", &upload, 1, last.clone())
        .await
        .expect("part 1");
    store
        .complete("objects/m1.0", &upload, &[p0, p1])
        .await
        .expect("complete");
    let (size, stream) = store.get("objects/m1.0", None).await.expect("get");
    assert_eq!(size, (first.len() + last.len()) as u64);
    let whole = collect(stream).await;
    assert_eq!(&whole[..first.len()], &first[..]);
    assert_eq!(&whole[first.len()..], &last[..]);
    let (_, stream) = store
        .get("objects/m1.0", Some(10..20))
        .await
        .expect("range");
    assert_eq!(collect(stream).await, &first[10..20]);
    assert_eq!(
        store
            .read_all("objects/m1.0", 10 << 20)
            .await
            .expect("read")
            .len(),
        whole.len()
    );
    assert!(
        store.read_all("objects/m1.0", 1000).await.is_err(),
        "more than the bound"
    );

    // an abandoned upload leaves nothing behind and cannot be completed
    let upload = store.begin("objects/m2.0").await.expect("begin");
    let p0 = store
        .put_part("objects/m2.0", &upload, 0, last.clone())
        .await
        .expect("part");
    store.abort("objects/m2.0", &upload).await.expect("abort");
    assert!(
        store
            .complete("objects/m2.0", &upload, &[p0])
            .await
            .is_err()
    );
    assert!(matches!(
        store.get("objects/m2.0", None).await,
        Err(Error::NotFound)
    ));
    store
        .abort("objects/m2.0", &upload)
        .await
        .expect("aborting twice is fine");

    // small objects, deletion
    store
        .put("thumbs/m1.0", Bytes::from_static(b"jpeg"))
        .await
        .expect("put");
    assert_eq!(
        store.read_all("thumbs/m1.0", 100).await.expect("read"),
        &b"jpeg"[..]
    );
    store.delete("thumbs/m1.0").await.expect("delete");
    store
        .delete("thumbs/m1.0")
        .await
        .expect("deleting twice is fine");
    assert!(matches!(
        store.get("thumbs/m1.0", None).await,
        Err(Error::NotFound)
    ));

    // keys this module does not make are refused
    for bad in ["../x", "objects//x", "objects/../../etc", "a b", ""] {
        assert!(
            matches!(
                store.put(bad, Bytes::new()).await,
                Err(Error::InvalidKey(_))
            ),
            "{bad}"
        );
    }
}

#[tokio::test]
async fn a_local_directory_keeps_the_contract() {
    let dir = std::env::temp_dir().join(format!("sb-att-test-{}", fastrand::u64(..)));
    let store = Store::local(&dir).expect("local store");
    contract(&store).await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn an_s3_server_keeps_the_contract() {
    let server = S3Server::start().await.expect("start MinIO");
    let store = Store::s3(&s3_config(&server)).expect("s3 store");
    assert!(
        store
            .describe()
            .starts_with("s3://switchboard at http://127.0.0.1:")
    );
    assert!(
        !format!("{store:?}").contains(server.secret_key()),
        "no secret in Debug"
    );
    contract(&store).await;
}

#[tokio::test]
async fn the_probe_tells_bad_credentials_a_missing_bucket_and_no_server_apart() {
    let server = S3Server::start().await.expect("start MinIO");
    let mut wrong = s3_config(&server);
    wrong.secret_access_key = "not the secret".to_owned();
    let e = Store::s3(&wrong)
        .expect("store")
        .probe()
        .await
        .expect_err("refused");
    assert!(matches!(e, Error::AccessDenied(_)), "{e}");

    let mut missing = s3_config(&server);
    missing.bucket = "no-such-bucket".to_owned();
    let e = Store::s3(&missing)
        .expect("store")
        .probe()
        .await
        .expect_err("missing");
    assert!(matches!(e, Error::BucketMissing(_)), "{e}");

    let mut nowhere = s3_config(&server);
    nowhere.endpoint = Some(format!(
        "http://127.0.0.1:{}",
        switchboard_testkit::free_port().expect("port")
    ));
    let e = Store::s3(&nowhere)
        .expect("store")
        .probe()
        .await
        .expect_err("unreachable");
    assert!(matches!(e, Error::Unavailable(_)), "{e}");
}
