//! `aha serve`'s request decoder over any body: a request is decoded or refused with a 400 in
//! OpenAI's error shape, never a panic; what a decoded request yields (messages, stops, offered
//! tools, the reply translator fed its own messages as answer text) never panics either.
#![no_main]

use aha::protocol::Event;
use aha::server::openai::{parse_request, Translator};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let r = match parse_request(data) {
        Ok(r) => r,
        Err(e) => {
            assert_eq!(e.status.as_u16(), 400, "{}", e.message);
            assert!(e.body()["error"]["message"].is_string());
            return;
        }
    };
    let msgs = r.chat_messages();
    let tools = r.offered_tools();
    let mut tr = Translator::new(r.stops(), tools.as_deref());
    for m in msgs {
        tr.event(Event::ThinkingDelta {
            text: m.role,
            logprob: None,
            entropy: None,
        });
        tr.event(Event::AnswerDelta {
            text: m.content,
            logprob: None,
            entropy: None,
        });
        if tr.stopped() {
            break;
        }
    }
    tr.event(Event::TurnFinished {
        stats: Default::default(),
        tokens: vec![],
    });
    let _ = tr.finish_reason();
    let _ = tr.usage();
});
