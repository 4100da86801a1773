//! The business flow behind the events: orders are created, payments are attempted against
//! recent orders, authorised payments get captured, captured ones sometimes refunded. A few
//! small rolling windows of recent orders and payments keep ids consistent across events
//! (a refund names a payment that was captured) with bounded memory.
//!
//! Event types are drawn independently with the platform's mix; when a window is empty (at
//! start) the missing predecessor is invented as if it happened before the generator started,
//! so the mix stays exact.

use std::collections::VecDeque;
use std::sync::Arc;

use rand::Rng;

use super::ids;
use super::model::{self, Model, CURRENCIES};
use super::wire::Value;

/// The families of events, one lake table each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Family {
    Payments,
    Orders,
    Refunds,
}

impl Family {
    pub(crate) const ALL: [Family; 3] = [Family::Payments, Family::Orders, Family::Refunds];

    /// The lake table (and topic suffix) of the family.
    pub(crate) fn table(self) -> &'static str {
        match self {
            Family::Payments => "payments",
            Family::Orders => "orders",
            Family::Refunds => "refunds",
        }
    }

    /// The service that publishes the family.
    pub(crate) fn source(self) -> &'static str {
        match self {
            Family::Payments => "payment-gateway",
            Family::Orders => "checkout-service",
            Family::Refunds => "refund-service",
        }
    }
}

/// The event types of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum EventType {
    OrderCreated,
    PaymentAuthorized,
    PaymentRejected,
    PaymentCaptured,
    PaymentFailed,
    RefundCreated,
}

/// The mix of a payments platform, in per mille.
pub(crate) const MIX: &[(EventType, u32)] = &[
    (EventType::OrderCreated, 350),
    (EventType::PaymentAuthorized, 400),
    (EventType::PaymentRejected, 80),
    (EventType::PaymentCaptured, 100),
    (EventType::PaymentFailed, 20),
    (EventType::RefundCreated, 50),
];

impl EventType {
    pub(crate) fn name(self) -> &'static str {
        match self {
            EventType::OrderCreated => "OrderCreated",
            EventType::PaymentAuthorized => "PaymentAuthorized",
            EventType::PaymentRejected => "PaymentRejected",
            EventType::PaymentCaptured => "PaymentCaptured",
            EventType::PaymentFailed => "PaymentFailed",
            EventType::RefundCreated => "RefundCreated",
        }
    }

    pub(crate) fn family(self) -> Family {
        match self {
            EventType::OrderCreated => Family::Orders,
            EventType::RefundCreated => Family::Refunds,
            _ => Family::Payments,
        }
    }
}

/// One event's business content, before envelope and wire form.
#[derive(Debug, Clone)]
pub(crate) struct Content {
    pub event_type: EventType,
    pub order_id: Arc<str>,
    /// The trace the checkout started; every event of the order continues it.
    pub trace_id: Arc<str>,
    pub fields: Vec<(&'static str, Value)>,
    /// Index into [`CURRENCIES`].
    pub currency: usize,
    pub amount_minor: i64,
}

#[derive(Debug, Clone)]
/// Ids are shared (`Arc<str>`): an order is copied into the recent-orders window and into
/// each of its payments and events, and a payment into the authorised and captured windows.
struct Order {
    order_id: Arc<str>,
    merchant_id: Arc<str>,
    customer_id: Arc<str>,
    currency: usize,
    amount_minor: i64,
    country: &'static str,
    trace_id: Arc<str>,
}

#[derive(Debug, Clone)]
struct Card {
    bin: String,
    last4: String,
    network: &'static str,
}

#[derive(Debug, Clone)]
struct Payment {
    payment_id: Arc<str>,
    order: Order,
    amount_minor: i64,
    method: &'static str,
    card: Option<Card>,
    installments: i64,
}

/// How many recent orders / payments each window keeps.
const WINDOW: usize = 4_096;

/// A bounded window of recent items, oldest dropped first.
struct Window<T>(VecDeque<T>);

impl<T: Clone> Window<T> {
    fn new() -> Self {
        Window(VecDeque::with_capacity(WINDOW))
    }

    fn push(&mut self, item: T) {
        if self.0.len() == WINDOW {
            self.0.pop_front();
        }
        self.0.push_back(item);
    }

    fn pick<R: Rng>(&self, rng: &mut R) -> Option<T> {
        if self.0.is_empty() {
            return None;
        }
        self.0.get(rng.random_range(0..self.0.len())).cloned()
    }

    fn take<R: Rng>(&mut self, rng: &mut R) -> Option<T> {
        if self.0.is_empty() {
            return None;
        }
        let i = rng.random_range(0..self.0.len());
        self.0.swap_remove_back(i)
    }
}

/// The rolling state of the flow.
pub(crate) struct Flow {
    orders: Window<Order>,
    authorized: Window<Payment>,
    captured: Window<Payment>,
}

impl Flow {
    pub(crate) fn new() -> Self {
        Flow {
            orders: Window::new(),
            authorized: Window::new(),
            captured: Window::new(),
        }
    }

    /// The next event of the flow.
    pub(crate) fn next<R: Rng>(&mut self, rng: &mut R, model: &Model) -> Content {
        let event_type = model::pick(rng, MIX);
        match event_type {
            EventType::OrderCreated => {
                let order = new_order(rng, model);
                self.orders.push(order.clone());
                order_content(rng, &order)
            }
            EventType::PaymentAuthorized => {
                let payment = self.attempt(rng, model);
                self.authorized.push(payment.clone());
                payment_content(rng, event_type, &payment, None)
            }
            EventType::PaymentRejected => {
                let payment = self.attempt(rng, model);
                let reason = model::pick(rng, model::REJECTION_REASONS);
                payment_content(
                    rng,
                    event_type,
                    &payment,
                    Some(("rejection_reason", reason)),
                )
            }
            EventType::PaymentCaptured => {
                let mut payment = match self.authorized.take(rng) {
                    Some(p) => p,
                    None => self.attempt(rng, model),
                };
                if payment.amount_minor > 1 && rng.random_bool(0.08) {
                    // Partial capture: the shop shipped part of the order.
                    payment.amount_minor = rng.random_range(1..payment.amount_minor);
                }
                self.captured.push(payment.clone());
                payment_content(rng, event_type, &payment, None)
            }
            EventType::PaymentFailed => {
                // Half are captures that failed after authorisation, half failed attempts.
                let payment = match rng.random_bool(0.5).then(|| self.authorized.take(rng)) {
                    Some(Some(p)) => p,
                    _ => self.attempt(rng, model),
                };
                let reason = model::pick(rng, model::FAILURE_REASONS);
                payment_content(rng, event_type, &payment, Some(("failure_reason", reason)))
            }
            EventType::RefundCreated => {
                let payment = match self.captured.take(rng) {
                    Some(p) => p,
                    None => self.attempt(rng, model),
                };
                refund_content(rng, &payment)
            }
        }
    }

    /// A new payment attempt on a recent order (or an order from before the start).
    fn attempt<R: Rng>(&mut self, rng: &mut R, model: &Model) -> Payment {
        let order = match self.orders.pick(rng) {
            Some(o) => o,
            None => new_order(rng, model),
        };
        let method = model::pick(rng, model::METHODS);
        let card = matches!(method, "card" | "apple_pay" | "google_pay").then(|| new_card(rng));
        let installments = if CURRENCIES[order.currency].code == "BRL" {
            model::pick(
                rng,
                &[(1, 45), (2, 10), (3, 15), (6, 12), (10, 10), (12, 8)],
            )
        } else {
            model::pick(rng, &[(1, 92), (3, 5), (6, 3)])
        };
        Payment {
            payment_id: ids::prefixed(rng, "pay_", 20).into(),
            amount_minor: order.amount_minor,
            order,
            method,
            card,
            installments,
        }
    }
}

fn new_order<R: Rng>(rng: &mut R, model: &Model) -> Order {
    let merchant = model.merchant(rng);
    let currency = model.currency(rng, merchant);
    Order {
        order_id: ids::prefixed(rng, "ord_", 16).into(),
        merchant_id: model::merchant_id(merchant).into(),
        customer_id: model::customer_id(model.customer(rng)).into(),
        currency,
        amount_minor: model::order_amount(rng, currency),
        country: model::country(rng, currency),
        trace_id: ids::trace_id(rng).into(),
    }
}

fn new_card<R: Rng>(rng: &mut R) -> Card {
    let network = model::pick(rng, model::NETWORKS);
    let mut bin = String::with_capacity(6);
    match network {
        "visa" => {
            bin.push('4');
            ids::digits(rng, 5, &mut bin);
        }
        "mastercard" => {
            bin.push('5');
            bin.push((b'1' + rng.random_range(0..5u8)) as char);
            ids::digits(rng, 4, &mut bin);
        }
        "amex" => {
            bin.push_str(if rng.random_bool(0.5) { "34" } else { "37" });
            ids::digits(rng, 4, &mut bin);
        }
        _ => {
            bin.push_str("6011");
            ids::digits(rng, 2, &mut bin);
        }
    }
    let mut last4 = String::with_capacity(4);
    ids::digits(rng, 4, &mut last4);
    Card {
        bin,
        last4,
        network,
    }
}

/// The money field in one of the encodings the contract allows, each exact for the currency:
/// integer minor units, a decimal string, or a decimal JSON number.
pub(crate) fn money<R: Rng>(rng: &mut R, currency: usize, minor: i64) -> (&'static str, Value) {
    let exponent = CURRENCIES[currency].exponent;
    match rng.random_range(0..10) {
        0..=4 => ("amount_minor", Value::Int(minor)),
        5..=7 => ("amount", Value::Str(model::decimal(minor, exponent))),
        _ => (
            "amount",
            Value::Raw(model::decimal_trimmed(minor, exponent)),
        ),
    }
}

fn order_content<R: Rng>(rng: &mut R, o: &Order) -> Content {
    let item_count = 1 + (model::log_normal(rng, 1.3, 0.8) as i64).min(40);
    let fields = vec![
        ("order_id", Value::Shared(Arc::clone(&o.order_id))),
        ("merchant_id", Value::Shared(Arc::clone(&o.merchant_id))),
        ("customer_id", Value::Shared(Arc::clone(&o.customer_id))),
        money(rng, o.currency, o.amount_minor),
        ("currency", Value::Static(CURRENCIES[o.currency].code)),
        ("item_count", Value::Int(item_count)),
        ("channel", Value::Static(model::pick(rng, model::CHANNELS))),
        ("country", Value::Static(o.country)),
    ];
    Content {
        event_type: EventType::OrderCreated,
        order_id: Arc::clone(&o.order_id),
        trace_id: Arc::clone(&o.trace_id),
        fields,
        currency: o.currency,
        amount_minor: o.amount_minor,
    }
}

fn payment_content<R: Rng>(
    rng: &mut R,
    event_type: EventType,
    p: &Payment,
    reason: Option<(&'static str, &'static str)>,
) -> Content {
    let o = &p.order;
    let u: f64 = rng.random();
    let risk = match reason {
        Some((_, "fraud_suspected")) => 0.75 + 0.24 * u,
        Some(("rejection_reason", _)) => 0.25 + 0.5 * u,
        _ => 0.6 * u.powf(2.2),
    };
    let mut latency = model::log_normal(rng, 140.0, 0.55).clamp(3.0, 20_000.0);
    if matches!(reason, Some((_, "network_error" | "processor_timeout"))) {
        latency *= 20.0;
    }
    let mut fields = Vec::with_capacity(16);
    fields.push(("payment_id", Value::Shared(Arc::clone(&p.payment_id))));
    fields.push(("order_id", Value::Shared(Arc::clone(&o.order_id))));
    fields.push(("merchant_id", Value::Shared(Arc::clone(&o.merchant_id))));
    fields.push(("customer_id", Value::Shared(Arc::clone(&o.customer_id))));
    fields.push(money(rng, o.currency, p.amount_minor));
    fields.push(("currency", Value::Static(CURRENCIES[o.currency].code)));
    fields.push(("payment_method", Value::Static(p.method)));
    if let Some(card) = &p.card {
        fields.push((
            "card",
            Value::Object(vec![
                ("bin", Value::Str(card.bin.clone())),
                ("last4", Value::Str(card.last4.clone())),
                ("network", Value::Static(card.network)),
            ]),
        ));
    }
    fields.push(("country", Value::Static(o.country)));
    // Four decimals, as text: a float's shortest form could be a long digit run.
    let risk_ten_thousandths = (risk.clamp(0.0, 0.9999) * 10_000.0) as u32;
    fields.push((
        "risk_score",
        Value::Raw(format!("0.{risk_ten_thousandths:04}")),
    ));
    fields.push(("decision_latency_ms", Value::Int(latency as i64)));
    fields.push(("installments", Value::Int(p.installments)));
    if let Some((k, v)) = reason {
        fields.push((k, Value::Static(v)));
    }
    Content {
        event_type,
        order_id: Arc::clone(&o.order_id),
        trace_id: Arc::clone(&o.trace_id),
        fields,
        currency: o.currency,
        amount_minor: p.amount_minor,
    }
}

fn refund_content<R: Rng>(rng: &mut R, p: &Payment) -> Content {
    let o = &p.order;
    let amount = if p.amount_minor > 1 && rng.random_bool(0.35) {
        rng.random_range(1..p.amount_minor)
    } else {
        p.amount_minor
    };
    let fields = vec![
        ("refund_id", Value::Str(ids::prefixed(rng, "re_", 16))),
        ("payment_id", Value::Shared(Arc::clone(&p.payment_id))),
        ("order_id", Value::Shared(Arc::clone(&o.order_id))),
        ("merchant_id", Value::Shared(Arc::clone(&o.merchant_id))),
        money(rng, o.currency, amount),
        ("currency", Value::Static(CURRENCIES[o.currency].code)),
        (
            "reason",
            Value::Static(model::pick(rng, model::REFUND_REASONS)),
        ),
    ];
    Content {
        event_type: EventType::RefundCreated,
        order_id: Arc::clone(&o.order_id),
        trace_id: Arc::clone(&o.trace_id),
        fields,
        currency: o.currency,
        amount_minor: amount,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;
    use std::collections::HashSet;

    fn str_field<'a>(c: &'a Content, k: &str) -> &'a str {
        match c.fields.iter().find(|(n, _)| *n == k) {
            Some((_, Value::Str(s))) => s,
            Some((_, Value::Shared(s))) => s,
            other => panic!("{k}: {other:?}"),
        }
    }

    #[test]
    fn ids_flow_from_orders_to_payments_to_refunds() {
        let mut rng = StdRng::seed_from_u64(21);
        let model = Model::new(&mut rng);
        let mut flow = Flow::new();
        let mut orders = HashSet::new();
        let mut captured = HashSet::new();
        let (mut linked_payments, mut payments) = (0, 0);
        let (mut linked_refunds, mut refunds) = (0, 0);
        for _ in 0..50_000 {
            let c = flow.next(&mut rng, &model);
            match c.event_type {
                EventType::OrderCreated => {
                    orders.insert(c.order_id.clone());
                }
                EventType::RefundCreated => {
                    refunds += 1;
                    linked_refunds += usize::from(captured.contains(str_field(&c, "payment_id")));
                }
                t => {
                    payments += 1;
                    linked_payments += usize::from(orders.contains(&c.order_id));
                    if t == EventType::PaymentCaptured {
                        captured.insert(str_field(&c, "payment_id").to_string());
                    }
                }
            }
            assert!(c.amount_minor >= 1);
            assert!(flow.orders.0.len() <= WINDOW && flow.captured.0.len() <= WINDOW);
        }
        // Only the first few events of the run lack a real predecessor.
        assert!(
            linked_payments as f64 > 0.99 * payments as f64,
            "{linked_payments}/{payments}"
        );
        assert!(
            linked_refunds as f64 > 0.95 * refunds as f64,
            "{linked_refunds}/{refunds}"
        );
    }
}
