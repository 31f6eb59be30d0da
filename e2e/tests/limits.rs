//! Limits: each produces its documented error frame or close code while other clients carry on, in
//! scaled mode (two nodes over Redis) and in standalone mode.

mod common;

use common::*;

macro_rules! both_modes {
    ($($scenario:ident),* $(,)?) => {
        mod scaled {
            use super::*;
            $(
                #[tokio::test]
                async fn $scenario() {
                    let t = cluster(&[]).await;
                    common::$scenario(&t, 0).await;
                }
            )*
        }
        mod standalone_mode {
            use super::*;
            $(
                #[tokio::test]
                async fn $scenario() {
                    let t = standalone(&[]).await;
                    common::$scenario(&t, 0).await;
                }
            )*
        }
    };
}

both_modes!(
    oversize_frame_closes_1009,
    websocket_violations_close_1002_and_1007,
    long_body_is_too_large,
    flood_is_rate_limited,
    invalid_names_are_refused,
    bad_frames_get_error_codes,
);

/// Small queues and no rate limit so one sender can overflow a reader that does not read.
const SLOW_CONSUMER_ARGS: [&str; 6] = [
    "--outbound-queue",
    "64",
    "--rate-per-sec",
    "100000",
    "--rate-burst",
    "100000",
];

#[tokio::test]
async fn slow_consumer_is_dropped_others_carry_on_across_nodes() {
    let t = cluster(&SLOW_CONSUMER_ARGS).await;
    common::slow_consumer_is_dropped_others_carry_on(&t, 0, 1).await;
}

#[tokio::test]
async fn slow_consumer_is_dropped_others_carry_on_standalone() {
    let t = standalone(&SLOW_CONSUMER_ARGS).await;
    common::slow_consumer_is_dropped_others_carry_on(&t, 0, 0).await;
}

#[tokio::test]
async fn missing_hello_closes_4002() {
    let t = standalone(&[]).await;
    common::missing_hello_closes_4002(&t, 0).await;
}

#[tokio::test]
async fn idle_connection_closes_4003() {
    let t = standalone(&["--idle-timeout", "2s"]).await;
    common::idle_connection_closes_4003(&t, 0).await;
}

/// Every throwaway member of the poisoned room connects from 127.0.0.1.
const MANY_CONNECTS: [&str; 2] = ["--handshakes-per-ip", "0"];

#[tokio::test]
async fn poisoned_room_stays_usable_across_nodes() {
    let t = cluster(&MANY_CONNECTS).await;
    common::poisoned_room_stays_usable(&t, 0, 1).await;
}

#[tokio::test]
async fn poisoned_room_stays_usable_standalone() {
    let t = standalone(&MANY_CONNECTS).await;
    common::poisoned_room_stays_usable(&t, 0, 0).await;
}

#[tokio::test]
async fn a_client_that_never_reads_is_cut_loose_scaled() {
    let t = cluster(&[]).await;
    common::a_client_that_never_reads_is_cut_loose(&t, 0).await;
}

#[tokio::test]
async fn a_client_that_never_reads_is_cut_loose_standalone() {
    let t = standalone(&[]).await;
    common::a_client_that_never_reads_is_cut_loose(&t, 0).await;
}
