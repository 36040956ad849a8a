"""Chat templates taken from the model's GGUF metadata (tokenizer.chat_template)."""

import os
import tempfile
import unittest

import grpc

from funnel.v1 import inference_pb2 as pb
from funnel_harness import MODEL, FunnelServer, greedy
from gguf_edit import with_string_key

CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
          "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
UNKNOWN = "{% for message in messages %}{{ message['content'] }}{% endfor %}"

MESSAGES = pb.ChatMessages(messages=[
    pb.ChatMessage(role="system", content="Tell stories."),
    pb.ChatMessage(role="user", content="A cat")])


class ChatTemplateTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.TemporaryDirectory(prefix="funnel-tmpl-")
        cls.chatml_model = os.path.join(cls.dir.name, "chatml.gguf")
        cls.unknown_model = os.path.join(cls.dir.name, "unknown.gguf")
        with_string_key(MODEL, cls.chatml_model, "tokenizer.chat_template", CHATML)
        with_string_key(MODEL, cls.unknown_model, "tokenizer.chat_template", UNKNOWN)

    @classmethod
    def tearDownClass(cls):
        cls.dir.cleanup()

    def prompt_ids(self, server, **fields):
        _, final = server.generate(pb.GenerateRequest(sampling=greedy(2), **fields))
        return list(final.prompt_ids)

    def test_recognised_model_template_is_applied(self):
        with FunnelServer(model=self.chatml_model) as server:
            info = server.stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=10)
            self.assertEqual(info.chat_template, "chatml")
            own = self.prompt_ids(server, messages=MESSAGES)
            named = self.prompt_ids(server, messages=MESSAGES, chat_template="chatml")
            plain = self.prompt_ids(server, messages=MESSAGES, chat_template="plain")
            self.assertEqual(own, named)
            self.assertNotEqual(own, plain)
            # The copy is otherwise the same model: same ids, same greedy tokens (llama2.c's).
            deltas, final = server.generate(pb.GenerateRequest(
                prompt="Once upon a time", sampling=greedy(5)))
            self.assertEqual(list(final.prompt_ids), [1, 403, 407, 261, 378])
            self.assertEqual([d.token_id for d in deltas], [432, 383, 286, 261, 376])

    def test_unrecognised_template_needs_a_named_one(self):
        with FunnelServer(model=self.unknown_model) as server:
            info = server.stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=10)
            self.assertEqual(info.chat_template, "")
            with self.assertRaises(grpc.RpcError) as e:
                server.generate(pb.GenerateRequest(messages=MESSAGES, sampling=greedy(2)))
            self.assertEqual(e.exception.code(), grpc.StatusCode.INVALID_ARGUMENT)
            self.assertIn("not recognised", e.exception.details())
            self.assertIn("chatml, llama2, llama3, mistral, plain, zephyr", e.exception.details())
            self.assertTrue(self.prompt_ids(server, messages=MESSAGES, chat_template="zephyr"))
            self.assertTrue(self.prompt_ids(server, prompt="Once"))

    def test_server_flag_overrides_the_model_template(self):
        with FunnelServer("--chat-template", "llama2", model=self.unknown_model) as server:
            info = server.stub.GetServerInfo(pb.GetServerInfoRequest(), timeout=10)
            self.assertEqual(info.chat_template, "llama2")
            ids = self.prompt_ids(server, messages=MESSAGES)
            named = self.prompt_ids(server, messages=MESSAGES, chat_template="llama2")
            self.assertEqual(ids, named)


if __name__ == "__main__":
    unittest.main()
