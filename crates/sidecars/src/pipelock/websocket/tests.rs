//! Tests of the WebSocket relay: the frame parser, reassembly, inflation and the
//! handshake rules as units; a proptest fuzz of the parser; the relay through the real
//! pipelock proxy against a real WebSocket upstream.
