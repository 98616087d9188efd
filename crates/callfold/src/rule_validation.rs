//! The checks of what `callfold.toml` says about topics: a linking rule's pointers must be JSON
//! pointers (from the envelope's root, so starting with `/`), and a topic named in the linking
//! rules or the precedence graph that is a near miss of one of Allo's topics is a typo. Either
//! mistake would otherwise pass silently: a pointer without its `/` never matches, and a
//! misspelled topic's rule never applies, so the events of the topic meant stay unlinked.
//!
//! A topic far from every known one is accepted: Allo adds topics over time.

use callfold_ingest::ALLO_TOPICS;

/// Why `pointer`, in the linking rule of `topic`, can never find a call id; `None` when it is
/// a JSON pointer.
pub fn pointer_problem(topic: &str, pointer: &str) -> Option<String> {
    if pointer.starts_with('/') {
        return None;
    }
    if pointer.is_empty() {
        return Some(format!(
            "the linking rule of `{topic}` has an empty pointer, which names the whole envelope \
             and never a call id; write the path to the id, such as `/data/id`"
        ));
    }
    let suggestion = format!("/{}", pointer.replace('.', "/"));
    Some(format!(
        "the linking rule of `{topic}` has the pointer `{pointer}`, which does not start with \
         `/`: a JSON pointer starts at the envelope's root, and one without its `/` never \
         matches, leaving every `{topic}` unlinked; write `{suggestion}`"
    ))
}

/// The known topic `topic` is most likely a typo of, if it is unknown and close to one.
pub fn misspelled_topic(topic: &str) -> Option<&'static str> {
    if ALLO_TOPICS.contains(&topic) {
        return None;
    }
    ALLO_TOPICS
        .iter()
        .map(|known| (strsim::damerau_levenshtein(topic, known), *known))
        .filter(|(distance, _)| *distance <= 2)
        .min()
        .map(|(_, known)| known)
}

/// Whether `topic` is one of Allo's topics.
pub fn is_known_topic(topic: &str) -> bool {
    ALLO_TOPICS.contains(&topic)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pointer_without_its_slash_is_refused_with_the_fix() {
        assert_eq!(pointer_problem("tag.added", "/data/call_id"), None);
        let said = pointer_problem("tag.added", "data/call_id").expect("refused");
        assert!(said.contains("write `/data/call_id`"), "{said}");
        let dotted = pointer_problem("tag.added", "data.call_id").expect("refused");
        assert!(dotted.contains("write `/data/call_id`"), "{dotted}");
        assert!(pointer_problem("tag.added", "").is_some());
    }

    #[test]
    fn near_misses_of_known_topics_are_typos_and_far_ones_new_topics() {
        assert_eq!(misspelled_topic("call.complete"), Some("call.completed"));
        assert_eq!(misspelled_topic("tag.addded"), Some("tag.added"));
        assert_eq!(misspelled_topic("call_answered"), Some("call.answered"));
        assert_eq!(misspelled_topic("call.completed"), None);
        assert_eq!(misspelled_topic("voicemail.left"), None);
        assert!(!is_known_topic("voicemail.left"));
        assert!(is_known_topic("sms.sent"));
    }
}
