//! What simulated orders contain: a catalogue (Best Buy Canada-like built-in products, or the
//! seller's own from `--skus`) and customers, drawn from a seeded generator so the same seed
//! always produces the same orders.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rand::RngExt;
use rand::rngs::StdRng;

use super::order::{date, later};
use super::state::{LineSpec, OrderSpec};

/// A product a simulated shop sells. Prices are in cents so totals add up exactly.
#[derive(Clone, Debug)]
pub(crate) struct Product {
    pub offer_sku: Cow<'static, str>,
    pub product_sku: Cow<'static, str>,
    pub title: Cow<'static, str>,
    pub category_code: &'static str,
    pub category_label: &'static str,
    pub unit_cents: u64,
    pub shipping_cents: u64,
}

/// The unit price of a scripted line whose SKU is in no catalogue.
const UNKNOWN_SKU_CENTS: u64 = 1_000;

const PRODUCTS: &[Product] = &[
    Product {
        offer_sku: Cow::Borrowed("SHOP-AIRPODS-PRO2"),
        product_sku: Cow::Borrowed("17153460"),
        title: Cow::Borrowed(
            "Apple AirPods Pro (2nd Generation) Noise Cancelling True Wireless Earbuds with USB-C MagSafe Case",
        ),
        category_code: "CAT_HEADPHONES",
        category_label: "Headphones",
        unit_cents: 32_999,
        shipping_cents: 0,
    },
    Product {
        offer_sku: Cow::Borrowed("SHOP-SONY-XM5"),
        product_sku: Cow::Borrowed("16305487"),
        title: Cow::Borrowed(
            "Sony WH-1000XM5 Over-Ear Noise Cancelling Bluetooth Headphones - Black",
        ),
        category_code: "CAT_HEADPHONES",
        category_label: "Headphones",
        unit_cents: 44_999,
        shipping_cents: 0,
    },
    Product {
        offer_sku: Cow::Borrowed("SHOP-LG-OLED55"),
        product_sku: Cow::Borrowed("16842915"),
        title: Cow::Borrowed("LG 55\" 4K UHD HDR OLED webOS Smart TV"),
        category_code: "CAT_TV",
        category_label: "Televisions",
        unit_cents: 179_999,
        shipping_cents: 4_999,
    },
    Product {
        offer_sku: Cow::Borrowed("SHOP-SWITCH-OLED"),
        product_sku: Cow::Borrowed("15689336"),
        title: Cow::Borrowed("Nintendo Switch (OLED Model) - White"),
        category_code: "CAT_CONSOLES",
        category_label: "Video Game Consoles",
        unit_cents: 44_999,
        shipping_cents: 999,
    },
    Product {
        offer_sku: Cow::Borrowed("SHOP-ANKER-65W"),
        product_sku: Cow::Borrowed("16511287"),
        title: Cow::Borrowed("Anker 65W USB-C GaN Wall Charger"),
        category_code: "CAT_CHARGERS",
        category_label: "Chargers",
        unit_cents: 5_999,
        shipping_cents: 599,
    },
    Product {
        offer_sku: Cow::Borrowed("SHOP-LOGI-MX3S"),
        product_sku: Cow::Borrowed("16634212"),
        title: Cow::Borrowed("Logitech MX Master 3S Wireless Optical Mouse - Graphite"),
        category_code: "CAT_MICE",
        category_label: "Mice",
        unit_cents: 12_999,
        shipping_cents: 599,
    },
    Product {
        offer_sku: Cow::Borrowed("SHOP-BREVILLE-BES870"),
        product_sku: Cow::Borrowed("10394612"),
        title: Cow::Borrowed("Breville Barista Express Espresso Machine - Brushed Stainless Steel"),
        category_code: "CAT_COFFEE",
        category_label: "Coffee Machines",
        unit_cents: 84_999,
        shipping_cents: 1_999,
    },
    Product {
        offer_sku: Cow::Borrowed("SHOP-SAMSUNG-T7-1TB"),
        product_sku: Cow::Borrowed("14947357"),
        title: Cow::Borrowed("Samsung T7 1TB USB 3.2 External Solid State Drive - Grey"),
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
    pub product: Arc<Product>,
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
    /// `order_tax_mode` as OR11 shows it; only TAX_EXCLUDED adds taxes to the lines.
    pub tax_mode: String,
}

/// Largest number of lines an order may have; real orders rarely have more than a handful.
pub(crate) const MAX_LINES: u32 = 100;

pub(crate) const TAX_INCLUDED: &str = "TAX_INCLUDED";
pub(crate) const TAX_EXCLUDED: &str = "TAX_EXCLUDED";

/// What generated orders draw their lines from, and where scripted lines find their defaults.
#[derive(Clone, Debug)]
pub struct Catalogue {
    products: Arc<[Arc<Product>]>,
    by_sku: Arc<HashMap<String, usize>>,
}

impl Default for Catalogue {
    /// The built-in products, which the benchmarks' and tests' seeded orders depend on.
    fn default() -> Catalogue {
        Catalogue::new(PRODUCTS.to_vec())
    }
}

/// Why `--skus` could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CatalogueError {
    #[error(
        "cannot read the catalogue file {path}: {source}. Give a CSV file of \
         sku,unit_price[,title] lines, or an inline list like SKU1:19.99,SKU2:5"
    )]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// One line of the file, or one entry of the list, is wrong.
    #[error("{place}: {problem}. Fix that {kind} and start again")]
    Entry {
        place: String,
        kind: &'static str,
        problem: String,
    },
    #[error("{origin} holds no SKU. Give at least one sku,unit_price line (or SKU:PRICE entry)")]
    Empty { origin: String },
}

impl Catalogue {
    fn new(products: Vec<Product>) -> Catalogue {
        let by_sku = products
            .iter()
            .enumerate()
            .map(|(at, product)| (product.offer_sku.to_string(), at))
            .collect();
        Catalogue {
            products: products.into_iter().map(Arc::new).collect(),
            by_sku: Arc::new(by_sku),
        }
    }

    /// `--skus`: the CSV file at `value` if there is one, else an inline `SKU:PRICE,...` list.
    pub fn from_arg(value: &str) -> Result<Catalogue, CatalogueError> {
        let path = Path::new(value);
        if path.is_file() || !value.contains(':') {
            let text = std::fs::read_to_string(path).map_err(|source| CatalogueError::Read {
                path: value.to_owned(),
                source,
            })?;
            return Catalogue::from_csv(value, &text);
        }
        Catalogue::from_list(value)
    }

    /// `sku,unit_price[,title]` lines (standard CSV quoting), with an optional header line
    /// starting `sku`; blank lines are skipped. `origin` names the file in errors.
    pub fn from_csv(origin: &str, text: &str) -> Result<Catalogue, CatalogueError> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .flexible(true)
            .trim(csv::Trim::All)
            .from_reader(text.as_bytes());
        let mut builder = Builder::default();
        for (at, record) in reader.records().enumerate() {
            let record = record.map_err(|error| {
                let line = error.position().map_or(at as u64 + 1, csv::Position::line);
                entry(origin, line, error.to_string())
            })?;
            let line = record.position().map_or(at as u64 + 1, csv::Position::line);
            let fields: Vec<&str> = record.iter().collect();
            match fields.as_slice() {
                [] | [""] => {}
                [sku, ..] if at == 0 && sku.eq_ignore_ascii_case("sku") => {}
                [sku, price] => builder
                    .add(sku, price, None)
                    .map_err(|problem| entry(origin, line, problem))?,
                [sku, price, title] => builder
                    .add(sku, price, Some(title))
                    .map_err(|problem| entry(origin, line, problem))?,
                _ => {
                    return Err(entry(
                        origin,
                        line,
                        format!(
                            "expected sku,unit_price[,title], found {} fields",
                            fields.len()
                        ),
                    ));
                }
            }
        }
        builder.build(format!("catalogue file {origin}"))
    }

    /// `SKU1:19.99,SKU2:5`.
    pub fn from_list(list: &str) -> Result<Catalogue, CatalogueError> {
        let mut builder = Builder::default();
        for (at, item) in list.split(',').map(str::trim).enumerate() {
            let place = || format!("catalogue list entry {} ({item:?})", at + 1);
            let problem = match item.split_once(':') {
                None => Err("expected SKU:PRICE, e.g. SHOP-MOUSE:19.99".to_owned()),
                Some((sku, price)) => builder.add(sku.trim(), price.trim(), None),
            };
            problem.map_err(|problem| CatalogueError::Entry {
                place: place(),
                kind: "entry",
                problem,
            })?;
        }
        builder.build("the catalogue list".to_owned())
    }

    /// How many SKUs it holds.
    pub fn len(&self) -> usize {
        self.products.len()
    }

    pub fn is_empty(&self) -> bool {
        self.products.is_empty()
    }

    fn get(&self, sku: &str) -> Option<&Arc<Product>> {
        self.by_sku.get(sku).map(|&at| &self.products[at])
    }

    fn draw(&self, rng: &mut StdRng) -> Arc<Product> {
        Arc::clone(&self.products[rng.random_range(0..self.products.len())])
    }
}

fn entry(origin: &str, line: u64, problem: String) -> CatalogueError {
    CatalogueError::Entry {
        place: format!("catalogue file {origin} line {line}"),
        kind: "line",
        problem,
    }
}

/// A catalogue being read: its products so far, each SKU once.
#[derive(Default)]
struct Builder {
    products: Vec<Product>,
    skus: HashSet<String>,
}

impl Builder {
    fn add(&mut self, sku: &str, price: &str, title: Option<&str>) -> Result<(), String> {
        if sku.is_empty() {
            return Err("the SKU is empty".to_owned());
        }
        let unit_price = price
            .parse::<f64>()
            .ok()
            .filter(|price| price.is_finite() && *price >= 0.0)
            .ok_or_else(|| {
                format!("unit_price {price:?} for {sku} is not a price in dollars, like 19.99")
            })?;
        if !self.skus.insert(sku.to_owned()) {
            return Err(format!("SKU {sku} is already in the catalogue above"));
        }
        // A built-in SKU keeps its product id, category and shipping; the rest is the seller's.
        let builtin = PRODUCTS.iter().find(|product| product.offer_sku == sku);
        let title = title.filter(|title| !title.is_empty());
        self.products.push(Product {
            offer_sku: Cow::Owned(sku.to_owned()),
            product_sku: builtin.map_or_else(
                || Cow::Owned(derived_product_sku(sku)),
                |known| known.product_sku.clone(),
            ),
            title: match (title, builtin) {
                (Some(title), _) => Cow::Owned(title.to_owned()),
                (None, Some(known)) => known.title.clone(),
                (None, None) => Cow::Owned(sku.to_owned()),
            },
            category_code: builtin.map_or(GENERAL_CATEGORY.0, |known| known.category_code),
            category_label: builtin.map_or(GENERAL_CATEGORY.1, |known| known.category_label),
            unit_cents: cents(unit_price),
            shipping_cents: builtin.map_or(0, |known| known.shipping_cents),
        });
        Ok(())
    }

    fn build(self, origin: String) -> Result<Catalogue, CatalogueError> {
        if self.products.is_empty() {
            return Err(CatalogueError::Empty { origin });
        }
        Ok(Catalogue::new(self.products))
    }
}

/// Dollars to cents, rounded; negative and NaN prices read 0.
fn cents(price: f64) -> u64 {
    // Saturating float-to-int conversion: the documented way to clamp.
    (price * 100.0).round() as u64
}

/// A random line from the catalogue.
fn random_line(rng: &mut StdRng, catalogue: &Catalogue, id: String) -> Line {
    Line {
        id,
        product: catalogue.draw(rng),
        offer_id: rng.random_range(2_000..100_000),
        // Most marketplace lines are a single unit.
        quantity: if rng.random_range(0..10) < 8 {
            1
        } else {
            rng.random_range(2..=3)
        },
    }
}

/// A line exactly as scripted; what the script leaves out comes from the catalogue.
fn scripted_line(rng: &mut StdRng, catalogue: &Catalogue, id: String, item: &LineSpec) -> Line {
    let known = catalogue.get(&item.sku);
    let product = Product {
        offer_sku: Cow::Owned(item.sku.clone()),
        product_sku: match (&item.product_sku, known) {
            (Some(product_sku), _) => Cow::Owned(product_sku.clone()),
            (None, Some(known)) => known.product_sku.clone(),
            (None, None) => Cow::Owned(derived_product_sku(&item.sku)),
        },
        title: known.map_or_else(|| Cow::Owned(item.sku.clone()), |known| known.title.clone()),
        category_code: known.map_or(GENERAL_CATEGORY.0, |known| known.category_code),
        category_label: known.map_or(GENERAL_CATEGORY.1, |known| known.category_label),
        unit_cents: item.unit_price.map_or_else(
            || known.map_or(UNKNOWN_SKU_CENTS, |known| known.unit_cents),
            cents,
        ),
        shipping_cents: known.map_or(0, |known| known.shipping_cents),
    };
    Line {
        id,
        product: Arc::new(product),
        offer_id: rng.random_range(2_000..100_000),
        quantity: item.quantity.max(1),
    }
}

/// The marketplace's product id for a SKU it has no product for.
fn derived_product_sku(sku: &str) -> String {
    format!("P-{sku}")
}

/// Category of SKUs from `--skus` and of scripted SKUs in no catalogue.
const GENERAL_CATEGORY: (&str, &str) = ("CAT_GENERAL", "General");

pub(crate) fn generate(
    rng: &mut StdRng,
    catalogue: &Catalogue,
    id: String,
    created: DateTime<Utc>,
    spec: &OrderSpec,
) -> Content {
    let lines = match spec.items.as_deref() {
        Some(items) if !items.is_empty() => items
            .iter()
            .take(MAX_LINES as usize)
            .enumerate()
            .map(|(at, item)| scripted_line(rng, catalogue, format!("{id}-{}", at + 1), item))
            .collect(),
        _ => {
            let count = spec
                .lines
                .map_or_else(|| rng.random_range(1..=3), |n| n.clamp(1, MAX_LINES));
            (1..=count)
                .map(|index| random_line(rng, catalogue, format!("{id}-{index}")))
                .collect()
        }
    };
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
        tax_mode: spec
            .tax_mode
            .clone()
            .unwrap_or_else(|| TAX_INCLUDED.to_owned()),
    }
}
