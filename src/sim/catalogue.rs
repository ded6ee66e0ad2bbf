//! What simulated orders contain: a small Best Buy Canada-like catalogue and customers, drawn
//! from a seeded generator so the same seed always produces the same orders.

use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::RngExt;
use rand::rngs::StdRng;

use super::order::{date, later};

/// A product a simulated shop sells. Prices are in cents so totals add up exactly.
#[derive(Debug)]
pub(crate) struct Product {
    pub offer_sku: &'static str,
    pub product_sku: &'static str,
    pub title: &'static str,
    pub category_code: &'static str,
    pub category_label: &'static str,
    pub unit_cents: u64,
    pub shipping_cents: u64,
}

const PRODUCTS: &[Product] = &[
    Product {
        offer_sku: "SHOP-AIRPODS-PRO2",
        product_sku: "17153460",
        title: "Apple AirPods Pro (2nd Generation) Noise Cancelling True Wireless Earbuds with USB-C MagSafe Case",
        category_code: "CAT_HEADPHONES",
        category_label: "Headphones",
        unit_cents: 32_999,
        shipping_cents: 0,
    },
    Product {
        offer_sku: "SHOP-SONY-XM5",
        product_sku: "16305487",
        title: "Sony WH-1000XM5 Over-Ear Noise Cancelling Bluetooth Headphones - Black",
        category_code: "CAT_HEADPHONES",
        category_label: "Headphones",
        unit_cents: 44_999,
        shipping_cents: 0,
    },
    Product {
        offer_sku: "SHOP-LG-OLED55",
        product_sku: "16842915",
        title: "LG 55\" 4K UHD HDR OLED webOS Smart TV",
        category_code: "CAT_TV",
        category_label: "Televisions",
        unit_cents: 179_999,
        shipping_cents: 4_999,
    },
    Product {
        offer_sku: "SHOP-SWITCH-OLED",
        product_sku: "15689336",
        title: "Nintendo Switch (OLED Model) - White",
        category_code: "CAT_CONSOLES",
        category_label: "Video Game Consoles",
        unit_cents: 44_999,
        shipping_cents: 999,
    },
    Product {
        offer_sku: "SHOP-ANKER-65W",
        product_sku: "16511287",
        title: "Anker 65W USB-C GaN Wall Charger",
        category_code: "CAT_CHARGERS",
        category_label: "Chargers",
        unit_cents: 5_999,
        shipping_cents: 599,
    },
    Product {
        offer_sku: "SHOP-LOGI-MX3S",
        product_sku: "16634212",
        title: "Logitech MX Master 3S Wireless Optical Mouse - Graphite",
        category_code: "CAT_MICE",
        category_label: "Mice",
        unit_cents: 12_999,
        shipping_cents: 599,
    },
    Product {
        offer_sku: "SHOP-BREVILLE-BES870",
        product_sku: "10394612",
        title: "Breville Barista Express Espresso Machine - Brushed Stainless Steel",
        category_code: "CAT_COFFEE",
        category_label: "Coffee Machines",
        unit_cents: 84_999,
        shipping_cents: 1_999,
    },
    Product {
        offer_sku: "SHOP-SAMSUNG-T7-1TB",
        product_sku: "14947357",
        title: "Samsung T7 1TB USB 3.2 External Solid State Drive - Grey",
        category_code: "CAT_STORAGE",
        category_label: "External Storage",
        unit_cents: 15_999,
        shipping_cents: 0,
    },
];

const FIRST_NAMES: &[&str] = &[
    "Olivia", "Liam", "Emma", "Noah", "Chloé", "William", "Aanya", "Lucas", "Mei", "Gabriel",
];
const LAST_NAMES: &[&str] = &[
    "Tremblay",
    "Smith",
    "Roy",
    "Martin",
    "Singh",
    "Gagnon",
    "Chen",
    "MacDonald",
    "Nguyen",
    "Brown",
];

/// City, province code and a postal code in that city.
const PLACES: &[(&str, &str, &str)] = &[
    ("Toronto", "ON", "M5V 2T6"),
    ("Vancouver", "BC", "V6B 1A1"),
    ("Montréal", "QC", "H3B 4W8"),
    ("Calgary", "AB", "T2P 1J9"),
    ("Ottawa", "ON", "K1P 5G4"),
    ("Halifax", "NS", "B3J 1S9"),
    ("Winnipeg", "MB", "R3C 0V8"),
];

#[derive(Debug)]
pub(crate) struct Customer {
    pub id: String,
    pub firstname: &'static str,
    pub lastname: &'static str,
    pub street: String,
    pub city: &'static str,
    pub province: &'static str,
    pub postal_code: &'static str,
}

#[derive(Debug)]
pub(crate) struct Line {
    pub id: String,
    pub product: &'static Product,
    pub offer_id: u64,
    pub quantity: u32,
}

impl Line {
    pub fn price_cents(&self) -> u64 {
        self.product.unit_cents * u64::from(self.quantity)
    }

    pub fn shipping_cents(&self) -> u64 {
        self.product.shipping_cents * u64::from(self.quantity)
    }

    /// The marketplace's commission: a flat 8%, rounded to the cent.
    pub fn commission_cents(&self) -> u64 {
        (self.price_cents() * 8).div_ceil(100)
    }
}

/// What never changes about an order once created; shared by reference between the state and
/// the responses being rendered outside the lock.
#[derive(Debug)]
pub(crate) struct Content {
    pub id: String,
    pub commercial_id: String,
    pub created: DateTime<Utc>,
    /// `created` as OR11 writes it, and the shipping deadline three days later: formatted
    /// once, since every OR11 answer shows them.
    pub created_date: String,
    pub shipping_deadline: String,
    pub customer: Customer,
    pub lines: Vec<Line>,
}

/// Largest number of lines an order may have; real orders rarely have more than a handful.
pub(crate) const MAX_LINES: u32 = 100;

pub(crate) fn generate(
    rng: &mut StdRng,
    id: String,
    created: DateTime<Utc>,
    lines: Option<u32>,
) -> Content {
    let line_count = lines.map_or_else(|| rng.random_range(1..=3), |n| n.clamp(1, MAX_LINES));
    let lines = (1..=line_count)
        .map(|index| Line {
            id: format!("{id}-{index}"),
            product: &PRODUCTS[rng.random_range(0..PRODUCTS.len())],
            offer_id: rng.random_range(2_000..100_000),
            // Most marketplace lines are a single unit.
            quantity: if rng.random_range(0..10) < 8 {
                1
            } else {
                rng.random_range(2..=3)
            },
        })
        .collect();
    let (city, province, postal_code) = PLACES[rng.random_range(0..PLACES.len())];
    let customer = Customer {
        id: format!("CUST-{:08}", rng.random_range(0..100_000_000u32)),
        firstname: FIRST_NAMES[rng.random_range(0..FIRST_NAMES.len())],
        lastname: LAST_NAMES[rng.random_range(0..LAST_NAMES.len())],
        street: format!("{} King Street", rng.random_range(1..=999)),
        city,
        province,
        postal_code,
    };
    // Mirakl's commercial id is the customer's order; `-A`, `-B`... are the per-shop parts.
    let commercial_id = id.strip_suffix("-A").unwrap_or(&id).to_owned();
    Content {
        id,
        commercial_id,
        created,
        created_date: date(created),
        shipping_deadline: date(later(created, Duration::from_secs(3 * 24 * 3600))),
        customer,
        lines,
    }
}
