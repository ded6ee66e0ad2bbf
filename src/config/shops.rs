//! The named shops (`[shops.NAME]`): each name checked, each table's keys checked like their
//! `[marketplace]` and `[rules]` counterparts, and every key a shop leaves out taken from those
//! sections, so each [`Shop`] comes out whole.

use std::collections::BTreeMap;
use std::time::Duration;

use secrecy::SecretString;

use super::Needs;
use super::raw;
use super::settings::*;
use super::validate::{Checker, ConnectionKeys};
use crate::rules::RuleAction;

impl Checker {
    /// The named shops in name order; a shop whose name is refused is left out (its problem
    /// is reported).
    pub(super) fn shops(
        &mut self,
        raw: BTreeMap<String, raw::Shop>,
        marketplace: &MarketplaceSettings,
        rules: &RulesSettings,
        needs: Needs,
    ) -> Vec<Shop> {
        raw.into_iter()
            .filter_map(|(name, shop)| {
                let name = self.shop_name(&name)?;
                Some(self.shop(name, shop, marketplace, rules, needs))
            })
            .collect()
    }

    fn shop_name(&mut self, name: &str) -> Option<ShopName> {
        let shown = name.escape_default();
        if name == ShopName::DEFAULT {
            self.problems.push(format!(
                "shops.{shown}: \"{}\" is the name of the [marketplace] shop; give this shop another name (examples: bestbuy_ca, other_marketplace)",
                ShopName::DEFAULT
            ));
            return None;
        }
        match ShopName::parse(name) {
            Ok(name) => Some(name),
            Err(problem) => {
                self.problems.push(format!("shops.{shown}: {problem}"));
                None
            }
        }
    }

    fn shop(
        &mut self,
        name: ShopName,
        raw: raw::Shop,
        inherited: &MarketplaceSettings,
        inherited_rules: &RulesSettings,
        needs: Needs,
    ) -> Shop {
        let key = |key: &str| format!("shops.{name}.{key}");
        let url = match raw.url.as_deref().map(str::trim) {
            Some(url) if !url.is_empty() => {
                let (url_key, url_var) = (key("url"), shop_env_var(&name, "url"));
                let api_key = format!("{} ({})", key("api_key"), shop_env_var(&name, "api_key"));
                let keys = ConnectionKeys {
                    url: &url_key,
                    url_var: &url_var,
                    api_key: &api_key,
                };
                self.marketplace_url(&keys, url)
            }
            _ => {
                self.problems.push(format!(
                    "{}: missing; give the shop's marketplace URL (example: url = \"https://marketplace.example.com\" under [shops.{name}])",
                    key("url")
                ));
                inherited.url.clone()
            }
        };
        let acceptance_window = match &raw.acceptance_window {
            Some(window) => self.acceptance_window(&key("acceptance_window"), window),
            None => inherited.acceptance_window,
        };
        let mut max_requests_per_second = inherited.gate.max_requests_per_second;
        if let Some(rate) = raw.max_requests_per_second {
            max_requests_per_second = self.rate(&key("max_requests_per_second"), rate);
        }
        let marketplace = MarketplaceSettings {
            url,
            api_key: self.shop_api_key(&name, raw.api_key, raw.api_key_file, needs),
            shop_id: match &raw.shop_id {
                Some(id) => self.shop_id(&key("shop_id"), id),
                None => None,
            },
            name: match raw.name {
                Some(service) => self.non_empty(&key("name"), service),
                None => inherited.name.clone(),
            },
            acceptance_window,
            gate: GateSettings {
                max_requests_per_second,
                ..inherited.gate.clone()
            },
            ..inherited.clone()
        };
        let rules = self.shop_rules(
            &name,
            raw.rules,
            inherited_rules,
            raw.acceptance_window.is_some(),
            acceptance_window,
        );
        Shop {
            name,
            marketplace,
            rules,
        }
    }

    /// The key from `api_key` (the file or its variable) or from the file `api_key_file`
    /// names, trimmed: exactly one of them. Missing is a problem only for commands that call
    /// the marketplace.
    fn shop_api_key(
        &mut self,
        name: &ShopName,
        api_key: Option<String>,
        api_key_file: Option<String>,
        needs: Needs,
    ) -> SecretString {
        let api_key = api_key.filter(|key| !key.trim().is_empty());
        let api_key_file = api_key_file.filter(|path| !path.trim().is_empty());
        let var = shop_env_var(name, "api_key");
        match (api_key, api_key_file) {
            (Some(_), Some(_)) => {
                self.problems.push(format!(
                    "shops.{name}: both api_key ({var}) and api_key_file are set; keep one of them"
                ));
                SecretString::from(String::new())
            }
            (Some(key), None) => SecretString::from(key),
            (None, Some(path)) if needs == Needs::Everything => {
                self.key_from_file(name, path.trim())
            }
            (None, Some(_)) => SecretString::from(String::new()),
            (None, None) => {
                if needs == Needs::Everything {
                    self.problems.push(format!(
                        "missing required settings: shops.{name}.api_key (or {var}, or shops.{name}.api_key_file)"
                    ));
                }
                SecretString::from(String::new())
            }
        }
    }

    fn key_from_file(&mut self, name: &ShopName, path: &str) -> SecretString {
        let key = format!("shops.{name}.api_key_file");
        match std::fs::read_to_string(path) {
            Ok(contents) if !contents.trim().is_empty() => {
                SecretString::from(contents.trim().to_owned())
            }
            Ok(_) => {
                self.problems.push(format!(
                    "{key}: {path} is empty; write the shop's API key in it"
                ));
                SecretString::from(String::new())
            }
            Err(err) => {
                self.problems.push(format!(
                    "{key}: cannot read {path} ({err}); give the path of a file holding the shop's API key, readable by the worker"
                ));
                SecretString::from(String::new())
            }
        }
    }

    /// `[rules]` with the shop's overrides; the deadline margin, overridden or not, must be
    /// shorter than the shop's own acceptance window.
    fn shop_rules(
        &mut self,
        name: &ShopName,
        raw: raw::ShopRules,
        inherited: &RulesSettings,
        own_window: bool,
        window: Duration,
    ) -> RulesSettings {
        let key = |key: &str| format!("shops.{name}.rules.{key}");
        let mut action = |field: &str, value: Option<String>, inherited: RuleAction| match value {
            Some(value) => self.rule_action(&key(field), &value),
            None => inherited,
        };
        let unknown_sku = action("unknown_sku", raw.unknown_sku, inherited.unknown_sku);
        let insufficient_stock = action(
            "insufficient_stock",
            raw.insufficient_stock,
            inherited.insufficient_stock,
        );
        let backorder = action("backorder", raw.backorder, inherited.backorder);
        let price_below_floor = action(
            "price_below_floor",
            raw.price_below_floor,
            inherited.price_below_floor,
        );
        let order_total_above_limit = action(
            "order_total_above_limit",
            raw.order_total_above_limit,
            inherited.order_total_above_limit,
        );
        let on_deadline = action("on_deadline", raw.on_deadline, inherited.on_deadline);
        let window_key = match own_window {
            true => format!("shops.{name}.acceptance_window"),
            false => "marketplace.acceptance_window".to_owned(),
        };
        let deadline_margin = match &raw.deadline_margin {
            Some(margin) => {
                self.deadline_margin(&key("deadline_margin"), margin, &window_key, window)
            }
            None => {
                if inherited.deadline_margin >= window {
                    self.problems.push(format!(
                        "shops.{name}.acceptance_window ({}) is not longer than the rules.deadline_margin the shop inherits ({}); set a shorter {} (example: 30m)",
                        window_text(window),
                        humantime::format_duration(inherited.deadline_margin),
                        key("deadline_margin"),
                    ));
                }
                inherited.deadline_margin
            }
        };
        RulesSettings {
            max_price_drop: match raw.max_price_drop {
                Some(drop) => self.fraction(&key("max_price_drop"), drop),
                None => inherited.max_price_drop,
            },
            max_order_total: match raw.max_order_total {
                Some(total) => self.optional_amount(&key("max_order_total"), total),
                None => inherited.max_order_total,
            },
            unknown_sku,
            insufficient_stock,
            backorder,
            price_below_floor,
            order_total_above_limit,
            on_deadline,
            deadline_margin,
            ..inherited.clone()
        }
    }
}
