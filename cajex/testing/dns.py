"""A DNS server on loopback for the tests: UDP, the real wire protocol,
answering TXT questions from a table the test fills (NXDOMAIN otherwise)."""

from __future__ import annotations

import socket
import threading

import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset


class TxtServer:
    """`records[name] = [strings]` is what the server answers for `name`."""

    def __init__(self) -> None:
        self.records: dict[str, list[str]] = {}
        self.questions: list[str] = []
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.address = f"127.0.0.1:{self._sock.getsockname()[1]}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self._sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                query = dns.message.from_wire(data)
            except Exception:  # noqa: BLE001, S112 - a malformed packet gets no answer
                continue
            answer = dns.message.make_response(query)
            answer.flags |= dns.flags.AA
            question = query.question[0]
            name = question.name.to_text(omit_final_dot=True).lower()
            self.questions.append(name)
            strings = self.records.get(name)
            if strings is None:
                answer.set_rcode(dns.rcode.NXDOMAIN)
            elif question.rdtype == dns.rdatatype.TXT:
                answer.answer.append(
                    dns.rrset.from_text_list(
                        question.name,
                        60,
                        dns.rdataclass.IN,
                        dns.rdatatype.TXT,
                        ['"' + s.replace('"', '\\"') + '"' for s in strings],
                    )
                )
            self._sock.sendto(answer.to_wire(), peer)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._sock.close()
