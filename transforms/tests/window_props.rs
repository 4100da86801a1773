//! Property tests of windows: however events are split into batches, and however they are
//! reordered within the allowed lateness, the final results equal those of one batch in time
//! order; and those equal DataFusion's plain GROUP BY over `date_bin` of the same events (for
//! sessions, over a sessionization written with `LAG` and a running `SUM`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::Ev;
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use paystream_transforms::window::WindowKind;
use proptest::prelude::*;

const LATENESS_S: i64 = 30;
const SQL: &str = "SELECT currency, merchant_id, count(*) AS n, sum(amount_minor) AS total, \
     min(amount_minor) AS lo, max(amount_minor) AS hi, \
     count(*) FILTER (WHERE event_type = 'PaymentRejected') AS rejected, \
     count(DISTINCT rejection_reason) AS reasons \
     FROM payments GROUP BY currency, merchant_id";

fn event() -> impl Strategy<Value = Ev> {
    (
        0i64..600,
        prop_oneof![Just("PaymentAuthorized"), Just("PaymentRejected")],
        prop_oneof![Just("m1"), Just("m2"), Just("m3")],
        prop_oneof![Just("EUR"), Just("USD")],
        0i64..1_000_000,
        prop_oneof![
            Just(None),
            Just(Some("fraud_suspected")),
            Just(Some("do_not_honor"))
        ],
        0i32..3,
    )
        .prop_map(|(secs, t, m, c, amount, reason, partition)| Ev {
            secs,
            event_type: t.into(),
            merchant: m.into(),
            currency: c.into(),
            amount,
            reason: reason.map(Into::into),
            partition,
        })
}

/// Events in time order, then shuffled so that no event arrives after one more than the
/// lateness younger (sort by time plus a jitter below the lateness), then cut into batches.
fn arrivals() -> impl Strategy<Value = (Vec<Ev>, Vec<Vec<Ev>>)> {
    prop::collection::vec((event(), 0..LATENESS_S, 0u8..8), 1..200).prop_map(|items| {
        let mut sorted: Vec<Ev> = items.iter().map(|(e, _, _)| e.clone()).collect();
        sorted.sort_by_key(|e| e.secs);
        let mut shuffled: Vec<(i64, Ev, u8)> = items
            .into_iter()
            .map(|(e, jitter, cut)| (e.secs + jitter, e, cut))
            .collect();
        shuffled.sort_by_key(|(k, _, _)| *k);
        let mut batches = vec![Vec::new()];
        for (_, e, cut) in shuffled {
            batches.last_mut().unwrap().push(e);
            if cut == 0 {
                batches.push(Vec::new());
            }
        }
        (sorted, batches)
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn oracle(events: &[Ev]) -> Vec<String> {
    let ctx = SessionContext::new();
    let table = MemTable::try_new(common::schema(), vec![vec![common::batch(events)]]).unwrap();
    ctx.register_table("payments", Arc::new(table)).unwrap();
    let sql = "SELECT date_bin(INTERVAL '60 seconds', event_time, TIMESTAMP '1970-01-01T00:00:00Z') AS window_start, \
               date_bin(INTERVAL '60 seconds', event_time, TIMESTAMP '1970-01-01T00:00:00Z') + INTERVAL '60 seconds' AS window_end, \
               currency, merchant_id, count(*) AS n, sum(amount_minor) AS total, \
               min(amount_minor) AS lo, max(amount_minor) AS hi, \
               count(*) FILTER (WHERE event_type = 'PaymentRejected') AS rejected, \
               count(DISTINCT rejection_reason) AS reasons \
               FROM payments GROUP BY 1, 2, 3, 4";
    let batches = ctx.sql(sql).await.unwrap().collect().await.unwrap();
    common::csv_lines(&batches)
}

const GAP_S: i64 = 20;

/// Sessions in plain SQL: per key in time order, an event at least a gap after the previous one
/// starts a session; the running count of starts numbers them.
async fn session_oracle(events: &[Ev]) -> Vec<String> {
    let ctx = SessionContext::new();
    let table = MemTable::try_new(common::schema(), vec![vec![common::batch(events)]]).unwrap();
    ctx.register_table("payments", Arc::new(table)).unwrap();
    let sql = format!(
        "WITH marked AS ( \
           SELECT *, CASE WHEN CAST(event_time AS BIGINT) - LAG(CAST(event_time AS BIGINT)) \
               OVER (PARTITION BY currency, merchant_id ORDER BY event_time) < {gap} \
               THEN 0 ELSE 1 END AS starts \
           FROM payments), \
         numbered AS ( \
           SELECT *, SUM(starts) OVER (PARTITION BY currency, merchant_id ORDER BY event_time, starts DESC \
               ROWS UNBOUNDED PRECEDING) AS sid \
           FROM marked) \
         SELECT min(event_time) AS window_start, max(event_time) + INTERVAL '{GAP_S} seconds' AS window_end, \
               currency, merchant_id, count(*) AS n, sum(amount_minor) AS total, \
               min(amount_minor) AS lo, max(amount_minor) AS hi, \
               count(*) FILTER (WHERE event_type = 'PaymentRejected') AS rejected, \
               count(DISTINCT rejection_reason) AS reasons \
         FROM numbered GROUP BY currency, merchant_id, sid",
        gap = GAP_S * 1_000_000
    );
    let batches = ctx.sql(&sql).await.unwrap().collect().await.unwrap();
    common::csv_lines(&batches)
}

/// (results, late rows) of `kind` windows fed `sorted` as one batch, and fed `batches`.
async fn both(
    kind: WindowKind,
    sorted: &[Ev],
    batches: &[Vec<Ev>],
) -> ((Vec<String>, usize), (Vec<String>, usize)) {
    let lateness = Duration::from_secs(LATENESS_S as u64);
    let mut one = common::transform(SQL, kind, lateness).await;
    let reference = common::run(&mut one, &[sorted.to_vec()]).await;
    let mut split = common::transform(SQL, kind, lateness).await;
    (reference, common::run(&mut split, batches).await)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    #[test]
    fn results_do_not_depend_on_batches_or_order_within_lateness((sorted, batches) in arrivals()) {
        let rt = runtime();
        let kind = WindowKind::Tumbling { size: Duration::from_secs(60) };
        let ((reference, late_ref), (shuffled, late)) = rt.block_on(both(kind, &sorted, &batches));
        prop_assert_eq!(late_ref, 0);
        prop_assert_eq!(late, 0);
        prop_assert_eq!(&shuffled, &reference);
        let expected = rt.block_on(oracle(&sorted));
        prop_assert_eq!(&reference, &expected);
    }

    #[test]
    fn hopping_windows_split_anyhow_match_one_batch((sorted, batches) in arrivals()) {
        let rt = runtime();
        let kind = WindowKind::Hopping { size: Duration::from_secs(60), slide: Duration::from_secs(15) };
        let ((reference, _), (shuffled, late)) = rt.block_on(both(kind, &sorted, &batches));
        prop_assert_eq!(late, 0);
        prop_assert_eq!(shuffled, reference);
    }

    #[test]
    fn sessions_split_anyhow_match_one_batch_and_sql((sorted, batches) in arrivals()) {
        let rt = runtime();
        let kind = WindowKind::Session { gap: Duration::from_secs(GAP_S as u64) };
        let ((reference, late_ref), (shuffled, late)) = rt.block_on(both(kind, &sorted, &batches));
        prop_assert_eq!(late_ref, 0);
        prop_assert_eq!(late, 0);
        prop_assert_eq!(&shuffled, &reference);
        let expected = rt.block_on(session_oracle(&sorted));
        prop_assert_eq!(&reference, &expected);
    }
}
