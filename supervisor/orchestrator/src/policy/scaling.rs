//! The policy's scaling: relays added on demand when viewers are refused, drained and removed
//! when idle, and scaled by hand, within `--relays` and `--max-relays`.

use super::*;

impl Policy {
    /// Viewers per relay, as control's directory knows them (relays it does not list are
    /// left as they were). A relay added on demand that stays idle for `scale_down_after` is
    /// drained, then removed once control has seen it draining and it holds no viewer: only
    /// relays above the starting count, the newest first, one at a time.
    pub fn handle_relay_load(&mut self, viewers: &BTreeMap<String, u32>, now: Instant) {
        for m in self.members.iter_mut().filter(|m| m.is_active_relay()) {
            match viewers.get(&m.name) {
                Some(0) => {
                    m.idle_since.get_or_insert(now);
                }
                Some(_) => m.idle_since = None,
                None => {}
            }
        }
        if self.relay_count() <= self.config.relays {
            return;
        }
        let Some(i) = self.members.iter().rposition(Member::is_active_relay) else {
            return;
        };
        let m = &mut self.members[i];
        let idle = m
            .idle_since
            .is_some_and(|t| now.saturating_duration_since(t) >= self.config.scale_down_after);
        match m.drain {
            Drain::No if idle && m.state == State::Running => {
                let ops = m
                    .instance
                    .as_ref()
                    .and_then(|inst| inst.addrs.get(&Role::Ops).copied());
                if let Some(ops) = ops {
                    m.drain = Drain::Asked;
                    self.actions.push_back(Action::Drain {
                        name: m.name.clone(),
                        generation: m.generation,
                        ops: loopback_if_unspecified(ops),
                    });
                }
            }
            Drain::Since(since)
                if now.saturating_duration_since(since) >= DRAIN_SEEN
                    && viewers.get(&m.name) == Some(&0) =>
            {
                let name = m.name.clone();
                self.remove(i);
                self.relays_wanted = self.relays_wanted.saturating_sub(1).max(self.config.relays);
                self.actions.push_back(Action::ForgetRelay(name.clone()));
                self.record(EventKind::ScaleDown, &name, "drained and removed");
            }
            _ => {}
        }
    }

    /// The answer to a [`Action::Drain`].
    pub fn handle_drained(&mut self, name: &str, generation: u64, ok: bool, now: Instant) {
        let Some(i) = self.current(name, generation) else {
            return;
        };
        let m = &mut self.members[i];
        if m.drain != Drain::Asked {
            return;
        }
        if !ok {
            // Asked again at the next load report.
            m.drain = Drain::No;
            return;
        }
        m.drain = Drain::Since(now);
        let detail = format!(
            "no viewer for {}; draining",
            humantime::format_duration(self.config.scale_down_after)
        );
        self.record(EventKind::Drain, name, detail);
    }

    /// Control turned `rejected` viewers away: add relays for them, up to the maximum, unless
    /// relays are starting already (they are the capacity on its way).
    pub fn handle_capacity(&mut self, rejected: u32, now: Instant) -> Capacity {
        let max = self.config.max_relays;
        let total = self.relay_count();
        let starting = self
            .members
            .iter()
            .filter(|m| m.is_active_relay() && m.state == State::Starting)
            .count() as u32;
        self.record(
            EventKind::Capacity,
            "control",
            format!("{rejected} viewers refused; {total} relays, max {max}"),
        );
        // A draining relay with room is the quickest capacity of all: keep it.
        for m in self.members.iter_mut().filter(|m| m.is_active_relay()) {
            m.idle_since = None;
        }
        let unchanged = Capacity {
            starting: 0,
            total,
            max,
        };
        if total >= max || starting > 0 {
            return unchanged;
        }
        let wanted = rejected.div_ceil(self.config.relay_capacity.max(1)).max(1);
        match self.handle_scale((total + wanted).min(max), now) {
            Ok(n) => Capacity {
                starting: n.saturating_sub(total),
                total: n,
                max,
            },
            Err(_) => unchanged,
        }
    }

    /// `ghost scale relays N`: adds relays and starts them, or stops the newest ones.
    pub fn handle_scale(&mut self, n: u32, _now: Instant) -> Result<u32, Refused> {
        let max = self.config.max_relays;
        if n == 0 || n > max {
            return Err(Refused::ScaleOutOfRange { max });
        }
        let before = self.relays_wanted;
        self.relays_wanted = n;
        for index in self.relay_count() + 1..=n {
            let relay = Member::new(Kind::Relay, index);
            // A relay of that name still stopping gives its place up: its reports name a
            // generation the new one will not have.
            let i = match self.position(&relay.name) {
                Some(i) => {
                    self.members[i] = relay;
                    i
                }
                None => {
                    self.members.push(relay);
                    self.members.len() - 1
                }
            };
            self.start(i);
        }
        while self.relay_count() > n {
            let Some(i) = self.members.iter().rposition(Member::is_active_relay) else {
                break;
            };
            let name = self.members[i].name.clone();
            self.remove(i);
            self.record(EventKind::ScaleDown, &name, "stopped");
        }
        self.record(EventKind::Scale, "relays", format!("{before} -> {n}"));
        Ok(n)
    }
}
