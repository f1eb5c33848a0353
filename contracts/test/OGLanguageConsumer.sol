// SPDX-License-Identifier: MIT
pragma solidity ^0.8.18;

import "../src/PipeInference.sol";

/// A contract written against OpenGradient's `OGInference.sol` names only (`OG_INFERENCE_ADDRESS`,
/// `OG_INFERENCE_CONTRACT`, `TensorLib.JsonScalar`, the LLM structs): it compiles against pipe's
/// interface unchanged and gets real answers in one transaction. `completeStored` reads its
/// prompt from storage (an earlier transaction in the block may change it: the stale case);
/// `converse` makes two dependent calls (the second turn quotes the first answer).
contract OGLanguageConsumer {
    string public lastAnswer;
    string public lastFinishReason;
    string public firstAnswer;
    string public storedPrompt = "In the beginning";

    function setPrompt(string calldata p) external {
        storedPrompt = p;
    }

    function completeStored(string calldata model) external returns (string memory) {
        return _complete(model, storedPrompt);
    }

    function converse(string calldata model, string calldata question) external returns (string memory) {
        ChatMessage[] memory first = new ChatMessage[](1);
        first[0] = _message("user", question);
        LLMChatResponse memory one = OG_INFERENCE_CONTRACT.runLLMChat(_chat(model, first));
        ChatMessage[] memory second = new ChatMessage[](3);
        second[0] = first[0];
        second[1] = _message("assistant", one.message.content);
        second[2] = _message("user", "And then?");
        LLMChatResponse memory two = OG_INFERENCE_CONTRACT.runLLMChat(_chat(model, second));
        firstAnswer = one.message.content;
        lastAnswer = two.message.content;
        lastFinishReason = two.finish_reason;
        return two.message.content;
    }

    function _message(string memory role, string memory content) internal pure returns (ChatMessage memory) {
        return ChatMessage({role: role, content: content, name: "", tool_call_id: "", tool_calls: new ToolCall[](0)});
    }

    function _chat(string memory model, ChatMessage[] memory messages) internal pure returns (LLMChatRequest memory) {
        return LLMChatRequest({
            mode: LLMInferenceMode.VANILLA,
            modelCID: model,
            messages: messages,
            tools: new ToolDefinition[](0),
            tool_choice: "",
            max_tokens: 12,
            stop_sequence: new string[](0),
            temperature: 0
        });
    }

    function precompile() external pure returns (address) {
        return OG_INFERENCE_ADDRESS;
    }

    function complete(string calldata model, string calldata prompt) external returns (string memory) {
        return _complete(model, prompt);
    }

    function _complete(string memory model, string memory prompt) internal returns (string memory) {
        string[] memory stops = new string[](1);
        stops[0] = "\n";
        LLMCompletionResponse memory r = OG_INFERENCE_CONTRACT.runLLMCompletion(
            LLMCompletionRequest({
                mode: LLMInferenceMode.VANILLA,
                modelCID: model,
                prompt: prompt,
                max_tokens: 32,
                stop_sequence: stops,
                temperature: 0
            })
        );
        lastAnswer = r.answer;
        return r.answer;
    }

    function chat(string calldata model, string calldata question) external returns (string memory) {
        ChatMessage[] memory messages = new ChatMessage[](1);
        messages[0] = ChatMessage({
            role: "user",
            content: question,
            name: "",
            tool_call_id: "",
            tool_calls: new ToolCall[](0)
        });
        ToolDefinition[] memory tools = new ToolDefinition[](1);
        tools[0] = ToolDefinition({
            description: "Current price of an asset",
            name: "price",
            parameters: '{"type":"object","properties":{"asset":{"type":"string"}}}'
        });
        LLMChatResponse memory r = OG_INFERENCE_CONTRACT.runLLMChat(
            LLMChatRequest({
                mode: LLMInferenceMode.TEE,
                modelCID: model,
                messages: messages,
                tools: tools,
                tool_choice: "auto",
                max_tokens: 64,
                stop_sequence: new string[](0),
                temperature: 70
            })
        );
        lastFinishReason = r.finish_reason;
        return r.message.content;
    }

    /// Reads a JSON output the way OpenGradient's examples do.
    function firstJson(ModelOutput memory out) external pure returns (TensorLib.JsonScalar memory) {
        return out.jsons[0];
    }
}
