//! Where a new relay goes when relays span several machines (Docker Swarm): a pure rule over
//! what the engine reports about its machines, unit-tested apart from any engine.

use std::collections::HashMap;

/// A machine as placement sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Machine {
    /// The engine's id for it.
    pub id: String,
    /// Its host name.
    pub hostname: String,
    /// `ready`, `down`, `disconnected` or `unknown`, as the engine last saw it.
    pub state: String,
    /// `active`, `pause` or `drain`: whether its operator lets it take new work.
    pub availability: String,
    /// CPUs it offers.
    pub cpus: f64,
}

impl Machine {
    /// Whether new relays may go there.
    pub fn schedulable(&self) -> bool {
        self.state == "ready" && self.availability == "active"
    }

    /// Whether its relays are lost: the engine no longer hears from it.
    pub fn lost(&self) -> bool {
        self.state == "down" || self.state == "disconnected"
    }
}

/// No machine can take a relay.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no Swarm node can take a relay: none is both ready and active (nodes: {machines})")]
pub struct NoMachine {
    /// Every machine with its state and availability, for the operator.
    pub machines: String,
}

/// The machine for a new relay: among the ready, active machines, the one with the fewest
/// relays per CPU (`load` counts the relays on each, by id), so an empty machine always wins
/// and relays spread before any machine takes a second; ties go to the machine with fewer
/// relays, then by host name, then by id, so the choice is stable.
///
/// `avoid` is the machine the relay was lost on, when it is replaced: another machine takes
/// it if any can. A machine whose link is cut still looks ready to the engine for several
/// seconds after its relays stopped answering, and a relay placed back there would wait for
/// it in vain.
pub fn choose<'a>(
    machines: &'a [Machine],
    load: &HashMap<String, u32>,
    avoid: Option<&str>,
) -> Result<&'a Machine, NoMachine> {
    let relays = |m: &Machine| load.get(&m.id).copied().unwrap_or(0);
    let elsewhere = machines
        .iter()
        .any(|m| m.schedulable() && Some(m.id.as_str()) != avoid);
    machines
        .iter()
        .filter(|m| m.schedulable())
        .filter(|m| !elsewhere || Some(m.id.as_str()) != avoid)
        .min_by(|a, b| {
            let per_cpu = |m: &Machine| f64::from(relays(m)) / m.cpus.max(0.1);
            per_cpu(a)
                .total_cmp(&per_cpu(b))
                .then(relays(a).cmp(&relays(b)))
                .then(a.hostname.cmp(&b.hostname))
                .then(a.id.cmp(&b.id))
        })
        .ok_or_else(|| NoMachine {
            machines: machines
                .iter()
                .map(|m| format!("{} ({}, {})", m.hostname, m.state, m.availability))
                .collect::<Vec<_>>()
                .join(", "),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine(id: &str, state: &str, availability: &str, cpus: f64) -> Machine {
        Machine {
            id: id.into(),
            hostname: format!("host-{id}"),
            availability: availability.into(),
            state: state.into(),
            cpus,
        }
    }

    #[test]
    fn relays_spread_over_machines_before_any_takes_a_second() {
        let machines = [
            machine("a", "ready", "active", 2.0),
            machine("b", "ready", "active", 2.0),
            machine("c", "ready", "active", 8.0),
        ];
        let mut load = HashMap::new();
        let mut order = Vec::new();
        for _ in 0..3 {
            let chosen = choose(&machines, &load, None)
                .expect("a machine")
                .id
                .clone();
            *load.entry(chosen.clone()).or_insert(0) += 1;
            order.push(chosen);
        }
        order.sort();
        assert_eq!(order, ["a", "b", "c"]);
        // Then by relays per CPU: the 8-CPU machine takes the next ones.
        assert_eq!(choose(&machines, &load, None).expect("a machine").id, "c");
    }

    #[test]
    fn drained_paused_and_down_machines_take_no_relay() {
        let machines = [
            machine("a", "ready", "drain", 2.0),
            machine("b", "ready", "pause", 2.0),
            machine("c", "down", "active", 2.0),
            machine("d", "ready", "active", 2.0),
        ];
        let load = HashMap::from([("d".to_string(), 5)]);
        assert_eq!(choose(&machines, &load, None).expect("a machine").id, "d");
        let error = choose(&machines[..3], &HashMap::new(), None).expect_err("no machine");
        let text = error.to_string();
        assert!(text.contains("no Swarm node can take a relay"), "{text}");
        assert!(text.contains("host-a (ready, drain)"), "{text}");
    }

    #[test]
    fn ties_are_broken_the_same_way_every_time() {
        let machines = [
            machine("z", "ready", "active", 2.0),
            machine("y", "ready", "active", 2.0),
        ];
        let load = HashMap::new();
        // Equal load and CPUs: the host name decides, whatever the order of the list.
        assert_eq!(choose(&machines, &load, None).expect("a machine").id, "y");
        let reversed = [machines[1].clone(), machines[0].clone()];
        assert_eq!(choose(&reversed, &load, None).expect("a machine").id, "y");
    }

    #[test]
    fn down_and_disconnected_machines_have_lost_their_relays() {
        assert!(machine("a", "down", "active", 1.0).lost());
        assert!(machine("a", "disconnected", "active", 1.0).lost());
        assert!(!machine("a", "ready", "drain", 1.0).lost());
        assert!(!machine("a", "unknown", "active", 1.0).lost());
    }

    #[test]
    fn a_replaced_relay_goes_elsewhere_when_it_can() {
        let machines = [
            machine("a", "ready", "active", 2.0),
            machine("b", "ready", "active", 2.0),
        ];
        // b is the emptier, but the relay was just lost there.
        let load = HashMap::from([("a".to_string(), 3)]);
        assert_eq!(choose(&machines, &load, None).expect("a machine").id, "b");
        assert_eq!(
            choose(&machines, &load, Some("b")).expect("a machine").id,
            "a"
        );
        // The only machine left takes it back all the same.
        let only = [machine("b", "ready", "active", 2.0)];
        assert_eq!(choose(&only, &load, Some("b")).expect("a machine").id, "b");
        // A machine that cannot take relays is no alternative.
        let drained = [
            machine("a", "ready", "drain", 2.0),
            machine("b", "ready", "active", 2.0),
        ];
        assert_eq!(
            choose(&drained, &load, Some("b")).expect("a machine").id,
            "b"
        );
    }
}
