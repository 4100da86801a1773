//! When windows close: only on window-end boundaries past the watermark less the lateness, so
//! that the pipeline forces a commit only when a window really closes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::{Ev, EPOCH_US};
use paystream_transforms::window::WindowKind;

fn at(secs: i64) -> Ev {
    Ev {
        secs,
        event_type: "PaymentAuthorized".into(),
        merchant: "m1".into(),
        currency: "EUR".into(),
        amount: 1,
        reason: None,
        partition: 0,
    }
}

fn us(secs: f64) -> i64 {
    EPOCH_US + (secs * 1e6) as i64
}

#[tokio::test]
async fn windows_close_on_their_end_plus_lateness_and_not_before() {
    let sql = "SELECT currency, count(*) AS n FROM payments GROUP BY currency";
    let kind = WindowKind::Tumbling {
        size: Duration::from_secs(60),
    };
    let mut w = common::transform(sql, kind, Duration::from_secs(5)).await;
    // Nothing held: nothing to close, whatever the watermark.
    assert!(!w.would_close(us(1_000.0)));
    w.push(&common::batch(&[at(10), at(70)])).await.unwrap();
    // The first window ends at 60 s: closable once the watermark reaches 65 s.
    assert!(!w.would_close(us(64.9)));
    assert!(w.advance(us(64.9)).await.unwrap().is_none());
    assert!(w.would_close(us(65.0)));
    let closed = w
        .advance(us(65.0))
        .await
        .unwrap()
        .expect("the first window closes");
    assert!(closed.final_results);
    assert_eq!(w.closed_until(), us(60.0));
    // The watermark moving within the second window closes nothing more.
    assert!(!w.would_close(us(100.0)));
    assert!(w.advance(us(100.0)).await.unwrap().is_none());
    assert_eq!(w.closed_until(), us(60.0));
    // An event for the closed window is late; one for the open window is not.
    let late = w.push(&common::batch(&[at(59), at(90)])).await.unwrap();
    assert_eq!(late.map(|l| l.rows.num_rows()), Some(1));
    assert!(w.would_close(us(125.0)));
}
